"""Precision names and the default precision of a device: one rule for the Emotion-LLaMA model,
its encoders and a local instruct LLM.

On CUDA the default is bfloat16 when the GPU has it, else float16 (the 7.8 B model in float32 is
about 31 GB and the slow path); float32 on the CPU and any other device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emotion_llama.errors import EmotionLlamaError

if TYPE_CHECKING:
    import torch

#: Accepted dtype names (and short forms) -> the torch attribute name.
DTYPES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def check_dtype(dtype: str | None, what: str = "LLM") -> str | None:
    """The canonical name of ``dtype`` (float32, float16, bfloat16); ``None`` for ``None`` or
    ``"auto"`` (the device's default). Any other name is refused with the accepted ones."""
    if dtype is None or dtype.strip().lower() == "auto":
        return None
    name = DTYPES.get(dtype.strip().lower())
    if name is None:
        raise EmotionLlamaError(f"unknown {what} dtype {dtype!r}: use auto, float32, float16 or bfloat16")
    return name


def is_cuda(device: str) -> bool:
    return device == "cuda" or device.startswith("cuda:")


def auto_dtype(device: str, cuda_bf16: bool) -> str:
    """The default precision on ``device``: bfloat16 on CUDA when the GPU supports it (``cuda_bf16``),
    else float16 on CUDA; float32 on the CPU and any other device."""
    if is_cuda(device):
        return "bfloat16" if cuda_bf16 else "float16"
    return "float32"


def resolve_dtype(dtype: str | None, device: str, what: str = "LLM") -> str:
    """``dtype`` checked and canonical, or for ``None``/``"auto"`` the default of ``device``."""
    name = check_dtype(dtype, what)
    if name is not None:
        return name
    bf16 = False
    if is_cuda(device):
        import torch

        bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return auto_dtype(device, bf16)


def torch_dtype(dtype: str | None, device: str, what: str = "model") -> torch.dtype:
    """:func:`resolve_dtype` as a ``torch.dtype``."""
    import torch

    return getattr(torch, resolve_dtype(dtype, device, what))  # type: ignore[no-any-return]


def check_device(device: str | torch.device, what: str = "the encoders") -> None:
    """Refuse a device this machine cannot run ``what`` on (a malformed name, CUDA without a GPU or
    without a CUDA build of torch), naming it, before any weight is loaded."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EmotionLlamaError(f"--device {device!r}: not a device name ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise EmotionLlamaError(f"--device {device} for {what}: {why} (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EmotionLlamaError(
                f"--device {device} for {what}: only {torch.cuda.device_count()} CUDA GPU(s) are visible"
            )
