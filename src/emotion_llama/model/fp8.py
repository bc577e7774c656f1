"""FP8 matmuls for inference: the LLM's (and a ViT's) linear layers with float8 e4m3 weights and
activations, scaled per row, computed by ``torch._scaled_mm``.

The recipe is the one FP8 inference engines use on Hopper/Ada GPUs (torchao's
``Float8DynamicActivationFloat8WeightConfig`` with ``PerRow`` granularity, vLLM's dynamic FP8):

* each weight row (output feature) gets one float32 scale, ``amax(row) / 448`` (448 is e4m3's
  largest value), and is stored as e4m3: half the bytes of bfloat16;
* each activation row (token) is scaled the same way at every call (dynamic);
* ``torch._scaled_mm`` multiplies the two e4m3 matrices with float32 accumulation and applies both
  scales on the way out, in the input's dtype.

It is built on the torch primitive itself rather than on torchao: torchao's config refuses any
device but a CUDA GPU of compute capability >= 8.9, while ``torch._scaled_mm`` also runs on the CPU
(slowly; it has no FP8 units), which is how the tests check the same code the GPU runs. On a GPU the
layers need compute capability 8.9 (Ada, Hopper) and bfloat16 activations (the row-wise kernel's
output type). FP8 is for inference only: there is no backward here.

LoRA adapters are merged into the base weights first (PEFT's ``merge_adapter``), so one FP8 matmul
replaces the base matmul and the two LoRA ones; the output head stays in the model's dtype (it picks
every label and token), and so does any layer whose sizes are not multiples of 16 (the GPU kernel's
alignment).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.quantize import SKIP_MODULES, quantization_of

if TYPE_CHECKING:
    from emotion_llama.model.modeling import EmotionLlama

FP8 = torch.float8_e4m3fn
#: e4m3's largest finite value: a row's absolute maximum maps onto it.
FP8_MAX = float(torch.finfo(FP8).max)
#: ``torch._scaled_mm``'s alignment on a GPU: both sizes of the weight a multiple of this.
ALIGN = 16
#: Never in FP8: the modules bitsandbytes skips too (the output head decides every label and token).
SKIP = SKIP_MODULES
#: The least compute capability with FP8 tensor cores (Ada; Hopper is 9.0).
MIN_CAPABILITY = (8, 9)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (rows, k) as e4m3 and one float32 scale per row (rows, 1): ``x ~= q * scale``. An all-zero
    row gets scale 1 (its e4m3 values are zeros)."""
    amax = x.detach().abs().amax(dim=-1, keepdim=True).float()
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


class Fp8Linear(nn.Module):
    """A linear layer with an e4m3 weight (out, in) and per-row scales; activations are quantized
    per row at each call. Built from an ``nn.Linear`` with :meth:`from_linear`."""

    def __init__(self, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)  # e4m3, (out, in), row-major
        self.register_buffer("weight_scale", weight_scale)  # float32, (out, 1)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Fp8Linear:
        q, scale = quantize_rows(linear.weight.data)
        bias = None if linear.bias is None else linear.bias.data.detach().clone()
        return cls(q, scale, bias)

    def dequantized(self) -> torch.Tensor:
        """The float32 weight this layer computes with."""
        return self.weight.float() * self.weight_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        if flat.shape[0] == 0:
            out = flat.new_zeros(0, self.out_features)
        else:
            xq, x_scale = quantize_rows(flat)
            # weight.t() is column-major, as the GPU kernel wants its second operand
            out = torch._scaled_mm(
                xq, self.weight.t(), scale_a=x_scale, scale_b=self.weight_scale.t(), out_dtype=x.dtype
            )
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 per-row"


def _skipped(name: str, skip: tuple[str, ...]) -> bool:
    leaf = name.rpartition(".")[2]
    return leaf in skip or ".lora_" in name or name.startswith("lora_")


def convertible(name: str, linear: nn.Linear, skip: tuple[str, ...] = SKIP) -> bool:
    """Whether ``linear`` (named ``name`` in its model) goes to FP8: not skipped, not a LoRA factor,
    both sizes multiples of :data:`ALIGN`."""
    return not _skipped(name, skip) and linear.in_features % ALIGN == 0 and linear.out_features % ALIGN == 0


def convert_linears(module: nn.Module, skip: tuple[str, ...] = SKIP) -> int:
    """Replace every plain ``nn.Linear`` of ``module`` that :func:`convertible` allows by an
    :class:`Fp8Linear` of the same weights, in place. Returns how many were replaced."""
    targets = [
        (name, m) for name, m in module.named_modules() if type(m) is nn.Linear and convertible(name, m, skip)
    ]
    for name, lin in targets:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, Fp8Linear.from_linear(lin))
    return len(targets)


def fp8_layers(module: nn.Module) -> int:
    """How many :class:`Fp8Linear` layers ``module`` holds."""
    return sum(isinstance(m, Fp8Linear) for m in module.modules())


def check_fp8_device(device: str | torch.device, dtype: torch.dtype) -> None:
    """Refuse FP8 where ``torch._scaled_mm`` cannot run it: a CUDA GPU under compute capability 8.9,
    or a GPU model not in bfloat16. The CPU always can (slowly)."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        raise EmotionLlamaError(f"--fp8 runs on a CUDA GPU (compute capability 8.9+) or the CPU, not {dev}")
    cap = torch.cuda.get_device_capability(dev)
    if cap < MIN_CAPABILITY:
        raise EmotionLlamaError(
            f"--fp8 needs FP8 tensor cores (compute capability 8.9+: Ada, Hopper); this GPU has "
            f"{cap[0]}.{cap[1]}. Use --load-in-8bit for 8-bit weights instead"
        )
    if dtype != torch.bfloat16:
        raise EmotionLlamaError(f"--fp8 on a GPU computes in bfloat16: use --dtype bfloat16, not {dtype}")


def merge_lora(llm: Any) -> bool:
    """Merge the active LoRA adapters into the base weights (PEFT's ``merge_adapter``); ``False``
    when ``llm`` carries none."""
    if not hasattr(llm, "merge_adapter"):
        return False
    llm.merge_adapter()
    return True


def to_fp8(model: EmotionLlama, *, vision: bool = False) -> int:
    """The model's LLM in FP8 for inference: LoRA merged, then every linear layer but the output
    head as :class:`Fp8Linear`; ``vision``: the ViT's linear layers too. In place; returns how many
    layers were converted. Refuses a model with bitsandbytes weights (already quantized)."""
    if quantization_of(model.llm) is not None:
        raise EmotionLlamaError("--fp8 and --load-in-8bit/--load-in-4bit exclude each other: choose one")
    dtype = next(model.llm.parameters()).dtype
    check_fp8_device(next(model.llm.parameters()).device, dtype)
    merge_lora(model.llm)
    n = convert_linears(model.llm)
    if vision:
        n += convert_linears(model.global_encoder)
    model.llm.emotion_llama_fp8 = True  # what reports and refusals read
    return n


def is_fp8(model: EmotionLlama) -> bool:
    return bool(getattr(model.llm, "emotion_llama_fp8", False))
