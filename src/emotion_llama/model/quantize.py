"""Weight quantization of the LLM through bitsandbytes: 8-bit (LLM.int8) and 4-bit (NF4, double
quantization), for inference on small GPUs and QLoRA training.

Only the LLM's linear layers are quantized (the attention and MLP projections); the output head,
the embeddings, the norms, the ViT, the five projections and the LoRA adapters keep the model's
dtype. Two routes give the same modules:

* a pretrained LLM (``llm.name_or_path``) loads quantized shard by shard through transformers'
  ``BitsAndBytesConfig`` (:func:`bnb_config`), so the full-precision model is never in memory;
* an LLM already in memory (random weights, the frozen base a checkpoint carries) has its linear
  layers replaced in place (:func:`quantize_linears`), the path bitsandbytes documents: the
  weights become ``Int8Params``/``Params4bit`` and are quantized when moved to the device.

bitsandbytes >= 0.45 also runs on the CPU (its CPU backend), which is how the tests check both
routes; the memory it saves matters on a GPU. :func:`weight_bytes` estimates the weights' memory
of a config for each mode (the figures in ``docs/training.md``).

``fp8`` (inference only, :mod:`emotion_llama.model.fp8`) is the third name the inference commands
accept: e4m3 weights and activations through ``torch._scaled_mm``, LoRA merged first; it needs no
bitsandbytes, and training refuses it (there is no backward).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emotion_llama.errors import ConfigError, EmotionLlamaError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from emotion_llama.model.modeling import EmotionLlama

#: Accepted quantization names (and short forms) -> the canonical one.
QUANTIZATIONS: dict[str, str] = {
    "8bit": "8bit", "int8": "8bit", "4bit": "4bit", "nf4": "4bit", "fp8": "fp8", "float8": "fp8",
}  # fmt: skip
#: The bitsandbytes modes: what QLoRA trains on (``fp8`` is for inference only).
BNB_QUANTIZATIONS = ("8bit", "4bit")
#: Each mode's command-line flag.
FLAGS = {"8bit": "--load-in-8bit", "4bit": "--load-in-4bit", "fp8": "--fp8"}

#: Modules never quantized: the output head decides every label and token (HF skips it too).
SKIP_MODULES: tuple[str, ...] = ("lm_head",)

#: LLM.int8's outlier threshold: activations above it go through a float16 matmul (the value
#: transformers' ``BitsAndBytesConfig`` uses by default).
INT8_THRESHOLD = 6.0

INSTALL_HINT = "install it with `pip install 'emotion-llama[quantize]'` (bitsandbytes)"


def check_quantization(quantization: str | None) -> str | None:
    """The canonical name of ``quantization`` (``8bit``, ``4bit``, ``fp8``); ``None`` for none/``None``.
    Any other name is refused with the accepted ones."""
    if quantization is None or quantization.strip().lower() in ("", "none", "no", "off"):
        return None
    name = QUANTIZATIONS.get(quantization.strip().lower())
    if name is None:
        raise ConfigError(f"unknown quantization {quantization!r}: use none, 8bit, 4bit or fp8")
    return name


def quantization_flags(load_in_8bit: bool, load_in_4bit: bool, fp8: bool = False) -> str | None:
    """The quantization the ``--load-in-8bit``/``--load-in-4bit``/``--fp8`` flags ask for (at most
    one)."""
    chosen = [q for q, on in (("8bit", load_in_8bit), ("4bit", load_in_4bit), ("fp8", fp8)) if on]
    if len(chosen) > 1:
        raise EmotionLlamaError(f"{' and '.join(FLAGS[q] for q in chosen)} exclude each other: choose one")
    return chosen[0] if chosen else None


def flag_of(quantization: str) -> str:
    """The command-line flag that asks for ``quantization`` (``--load-in-4bit``, ``--fp8``)."""
    return FLAGS[check_quantization(quantization) or quantization]


def check_trainable_quantization(quantization: str | None) -> str | None:
    """:func:`check_quantization` for training (QLoRA): bitsandbytes modes only."""
    name = check_quantization(quantization)
    if name == "fp8":
        raise ConfigError(
            "fp8 is an inference mode (FP8 matmuls, no backward, LoRA merged): QLoRA trains on "
            "8bit or 4bit weights"
        )
    return name


def require_bitsandbytes(quantization: str) -> Any:
    """The bitsandbytes module, or a clear error saying how to install it."""
    try:
        import bitsandbytes
    except ImportError:
        raise EmotionLlamaError(
            f"{quantization} weights need bitsandbytes, which is not installed: {INSTALL_HINT}"
        ) from None
    return bitsandbytes


def bnb_config(quantization: str, compute_dtype: torch.dtype) -> Any:
    """transformers' ``BitsAndBytesConfig`` for loading a pretrained LLM quantized: LLM.int8 for
    ``8bit``; NF4 with double quantization and ``compute_dtype`` matmuls for ``4bit`` (QLoRA's
    recipe)."""
    require_bitsandbytes(quantization)
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_threshold=INT8_THRESHOLD, llm_int8_skip_modules=list(SKIP_MODULES)
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=list(SKIP_MODULES),
    )


def _skipped(name: str) -> bool:
    return any(name == s or name.endswith("." + s) for s in SKIP_MODULES)


def quantize_linears(
    llm: nn.Module, quantization: str, *, compute_dtype: torch.dtype, device: str | torch.device
) -> int:
    """Replace every ``nn.Linear`` of ``llm`` (but the output head) by its bitsandbytes twin holding
    the same weights, quantized on ``device``. Returns how many layers were replaced."""
    bnb = require_bitsandbytes(quantization)
    import torch
    from torch import nn

    targets = [(name, m) for name, m in llm.named_modules() if type(m) is nn.Linear and not _skipped(name)]
    for name, lin in targets:
        parent_name, _, child = name.rpartition(".")
        parent = llm.get_submodule(parent_name) if parent_name else llm
        weight = lin.weight.data.detach().to("cpu", copy=True)
        has_bias = lin.bias is not None
        if quantization == "8bit":
            q = bnb.nn.Linear8bitLt(
                lin.in_features,
                lin.out_features,
                bias=has_bias,
                has_fp16_weights=False,
                threshold=INT8_THRESHOLD,
                device="meta",
            )
            q.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        else:
            q = bnb.nn.Linear4bit(
                lin.in_features,
                lin.out_features,
                bias=has_bias,
                compute_dtype=compute_dtype,
                quant_type="nf4",
                device="meta",
            )
            q.weight = bnb.nn.Params4bit(
                weight, requires_grad=False, quant_type="nf4", compress_statistics=True
            )
        if has_bias:
            q.bias = nn.Parameter(lin.bias.data.detach().to("cpu", copy=True), requires_grad=False)
        setattr(parent, child, q.to(torch.device(device)))  # quantization happens here
    _mark_quantized(llm, quantization)
    return len(targets)


def _mark_quantized(llm: nn.Module, quantization: str) -> None:
    """Flag the model as bitsandbytes-quantized the way transformers does, so that PEFT and
    transformers treat it as one (e.g. PEFT's k-bit preparation)."""
    setattr(llm, "is_loaded_in_8bit", quantization == "8bit")  # noqa: B010
    setattr(llm, "is_loaded_in_4bit", quantization == "4bit")  # noqa: B010
    setattr(llm, "emotion_llama_quantization", quantization)  # noqa: B010


def quantization_of(module: nn.Module) -> str | None:
    """``8bit``/``4bit`` when ``module`` holds bitsandbytes linear layers, ``fp8`` when it holds
    FP8 ones, else ``None``."""
    for m in module.modules():
        kind = type(m).__name__
        if kind == "Fp8Linear":
            return "fp8"
        if kind.startswith("Linear8bitLt"):
            return "8bit"
        if kind.startswith("Linear4bit"):
            return "4bit"
    return None


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """The full-precision weight a bitsandbytes linear layer computes with (float32)."""
    import bitsandbytes.functional as F
    import torch

    w = module.weight
    kind = type(w).__name__
    if kind == "Params4bit":
        if getattr(w.quant_state, "packing_format_for_cpu", False):
            # On AVX512-BF16 CPUs bitsandbytes repacks the weight at the first forward; undo it as
            # its own state_dict() does (the next forward packs it again).
            w.data, w.quant_state = F._convert_weight_packed_for_cpu_inverse(w.data, w.quant_state)
        return F.dequantize_4bit(w.data, w.quant_state).float()
    if kind == "Int8Params":
        scb = getattr(w, "SCB", None)
        if scb is None:
            scb = getattr(module.state, "SCB", None)
        return (w.data.float() * scb.float().unsqueeze(1) / 127.0).to(torch.float32)
    return w.data.float()


def dequantized_state_dict(llm: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The LLM's state under the plain model's key names with every quantized weight turned back
    into ``dtype``: what a checkpoint of a QLoRA run saves as the frozen base it trained against
    (only when the base has no external source, e.g. the random ``tiny`` model)."""
    out: dict[str, torch.Tensor] = {}
    quantized = {name: m for name, m in llm.named_modules() if _is_bnb_weight(m)}
    for name, m in quantized.items():
        out[f"{name}.weight"] = dequantized_weight(m).to(dtype)
        if m.bias is not None:
            out[f"{name}.bias"] = m.bias.data.to(dtype)
    for key, value in llm.state_dict().items():
        if key.rpartition(".")[0] in quantized or _owner(key, quantized):
            continue
        out[key] = value
    return out


def _is_bnb_weight(module: nn.Module) -> bool:
    return type(module._parameters.get("weight")).__name__ in ("Params4bit", "Int8Params")


def _owner(key: str, quantized: dict[str, Any]) -> bool:
    """Whether ``key`` is one of a quantized layer's extra entries (``weight.absmax``...)."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in quantized for i in range(len(parts) - 1, 0, -1))


def weight_bytes(model: EmotionLlama, quantization: str | None, *, dtype_bytes: int = 2) -> dict[str, int]:
    """Estimated memory of ``model``'s weights (built on the meta device is enough), in bytes, per
    part: the LLM's linear layers in ``quantization`` (int8 + one float32 scale per row; NF4 at 4
    bits + a double-quantized absmax, about 0.13 bits a weight, per QLoRA), everything else
    (embeddings, output head, norms, the ViT, the projections, LoRA) at ``dtype_bytes``."""
    from torch import nn

    llm_linear = other = 0
    quantizable = {
        id(m.weight): m
        for name, m in model.llm.named_modules()
        if type(m) is nn.Linear and not _skipped(name) and ".lora_" not in name
    }
    for p in model.parameters():
        if id(p) in quantizable:
            llm_linear += _layer_bytes(p.numel(), quantizable[id(p)].out_features, quantization, dtype_bytes)
        else:
            other += p.numel() * dtype_bytes
    return {"llm_linear": llm_linear, "other": other, "total": llm_linear + other}


def _layer_bytes(n: int, rows: int, quantization: str | None, dtype_bytes: int) -> int:
    """One linear layer's weight memory: ``n`` weights over ``rows`` output rows."""
    if quantization in ("8bit", "fp8"):  # int8 (or e4m3) weights + one float32 scale per row
        return n + 4 * rows
    if quantization == "4bit":  # NF4 nibbles, uint8 absmax per 64 weights, float32 per 256 absmax
        blocks = -(-n // 64)
        return n // 2 + blocks + 4 * -(-blocks // 256) + 4 * 16 + 4 * 256  # + the two code tables
    return n * dtype_bytes
