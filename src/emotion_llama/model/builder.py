"""Builders: a config in, an :class:`EmotionLlama` out. Plain functions, no registries.

Weights come from, in this order: ``frozen_state`` (the frozen parts saved in a checkpoint
folder when they have no external source, e.g. the random ``tiny`` model), the sources the
config names (``llm.name_or_path``, ``vision.weights``), or a seeded random initialisation.
On ``device="meta"`` nothing is allocated and nothing is loaded (``inspect``).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import torch

from emotion_llama.config import EmotionLlamaConfig, VisionConfig
from emotion_llama.errors import ConfigError
from emotion_llama.model.keys import ADAPTER, PROJECTIONS, convert_eva_state, is_trainable_key
from emotion_llama.model.modeling import EmotionLlama, GlobalEncoder
from emotion_llama.weights import read_torch_file

__all__ = ["ADAPTER", "build_model", "load_eva_vit_g", "parameter_counts", "set_trainable"]


# -- LLM -----------------------------------------------------------------------------------------
def resolve_llm_sizes(config: EmotionLlamaConfig) -> EmotionLlamaConfig:
    """Fill the LLM sizes from the model's own Hugging Face config when the preset leaves them
    open (``with_llm``); check the ones it gives."""
    m = config.llm
    if m.name_or_path is None:
        return config
    if m.sizes_known() and m.model_type != "auto":
        return config
    from transformers import AutoConfig

    try:
        hf = AutoConfig.from_pretrained(m.name_or_path, revision=m.revision)
    except OSError as exc:
        raise ConfigError(f"cannot read the config of LLM {m.name_or_path!r}: {exc}") from None
    hf = hf.get_text_config() if hasattr(hf, "get_text_config") else hf
    found = {
        "hidden_size": hf.hidden_size,
        "intermediate_size": getattr(hf, "intermediate_size", None),
        "num_layers": hf.num_hidden_layers,
        "num_heads": hf.num_attention_heads,
        "num_kv_heads": getattr(hf, "num_key_value_heads", hf.num_attention_heads),
        "vocab_size": hf.vocab_size,
    }
    for k, v in found.items():
        given = getattr(m, k)
        if given is not None and v is not None and given != v:
            raise ConfigError(f"config {config.name!r}: llm.{k}={given} but {m.name_or_path} has {k}={v}")
    return replace(config, llm=replace(m, model_type=hf.model_type, **found))


def _hf_llm_config(config: EmotionLlamaConfig) -> Any:
    from transformers import AutoConfig

    m = config.llm
    model_type = "llama" if m.model_type == "auto" else m.model_type
    return AutoConfig.for_model(
        model_type,
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        num_key_value_heads=m.num_kv_heads or m.num_heads,
        vocab_size=m.vocab_size,
        rms_norm_eps=m.rms_norm_eps,
        max_position_embeddings=m.max_position_embeddings,
        rope_theta=m.rope_theta,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )


def build_llm(
    config: EmotionLlamaConfig,
    *,
    dtype: torch.dtype = torch.float32,
    pretrained: bool = True,
) -> Any:
    """The plain Hugging Face causal LM (no adapters). Random weights when ``pretrained`` is
    false or the config names no model."""
    from transformers import AutoModelForCausalLM

    m = config.llm
    if pretrained and m.name_or_path is not None:
        try:
            return AutoModelForCausalLM.from_pretrained(m.name_or_path, dtype=dtype, revision=m.revision)
        except OSError as exc:
            raise ConfigError(
                f"cannot load the LLM {m.name_or_path!r}: {exc}. Download it first (for LLaMA-2: "
                "accept the licence on the hub, `hf auth login`) or point llm.name_or_path at a "
                "local folder."
            ) from None
    return AutoModelForCausalLM.from_config(_hf_llm_config(config), dtype=dtype)


def add_lora(llm: Any, config: EmotionLlamaConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = config.lora
    peft_cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(llm, peft_cfg, adapter_name=ADAPTER)


# -- the whole model ----------------------------------------------------------------------------
def build_model(
    config: EmotionLlamaConfig,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    pretrained: bool = True,
    frozen_state: dict[str, torch.Tensor] | None = None,
) -> EmotionLlama:
    """The full model with LoRA attached; only LoRA and the five projections are trainable."""
    config.validate()
    on_meta = torch.device(device).type == "meta"
    if on_meta:
        pretrained = False
    config = resolve_llm_sizes(config)  # reads only the LLM's config.json when sizes are open
    if not config.llm.sizes_known():
        raise ConfigError(f"config {config.name!r}: LLM sizes unknown and no model to read them from")
    torch.manual_seed(config.seed)
    # Build directly on the target device: random initialisation of a 7B model then happens
    # there (seconds on a GPU) instead of on the host; on "meta" nothing is allocated.
    target = torch.device(device)
    ctx = target if target.type != "cpu" else contextlib.nullcontext()
    frozen_state = frozen_state or {}
    enc_state = _strip_prefix(frozen_state, "global_encoder.")
    llm_state = _strip_prefix(frozen_state, "llm_base.")
    with ctx:
        llm = build_llm(config, dtype=dtype, pretrained=pretrained and not llm_state)
        if llm_state:
            llm.load_state_dict(llm_state, strict=True)
        encoder = GlobalEncoder(config.vision).to(dtype)
        if enc_state:
            encoder.load_state_dict(enc_state, strict=True)
        elif pretrained and config.vision.weights is not None:
            encoder.vit.load_state_dict(load_eva_vit_g(config.vision.weights, config.vision))
        llm = add_lora(llm, config)
        model = EmotionLlama(config, encoder, llm).to(dtype)
    set_trainable(model)
    if not on_meta:
        model = model.to(device)
    return model


def set_trainable(model: EmotionLlama) -> None:
    """Freeze everything but the LoRA adapters and the projections."""
    for name, p in model.named_parameters():
        p.requires_grad = is_trainable_key(name)


def frozen_state_dict(model: EmotionLlama) -> dict[str, torch.Tensor]:
    """The frozen parts that have no external source (random weights), to be saved with a
    checkpoint: the global encoder when ``vision.weights`` is unset, the base LLM when
    ``llm.name_or_path`` is unset."""
    out: dict[str, torch.Tensor] = {}
    if model.config.vision.weights is None:
        out.update({f"global_encoder.{k}": v for k, v in model.global_encoder.state_dict().items()})
    if model.config.llm.name_or_path is None:
        out.update({f"llm_base.{k}": v for k, v in base_llm_state_dict(model).items()})
    return out


def base_llm_state_dict(model: EmotionLlama) -> dict[str, torch.Tensor]:
    """The LLM's own weights without adapters, under the plain model's key names."""
    base = model.llm.get_base_model()
    return {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if ".lora_" not in k}


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def parameter_counts(model: EmotionLlama) -> dict[str, int]:
    """Parameter counts per part, and trainable/frozen totals."""
    counts = {"global_encoder": 0, "projections": 0, "llm": 0, "lora": 0}
    trainable = frozen = 0
    for name, p in model.named_parameters():
        n = p.numel()
        if name.startswith("global_encoder."):
            counts["global_encoder"] += n
        elif name.split(".")[0] in PROJECTIONS:
            counts["projections"] += n
        elif ".lora_" in name:
            counts["lora"] += n
        else:
            counts["llm"] += n
        if p.requires_grad:
            trainable += n
        else:
            frozen += n
    counts["trainable_parameters"] = trainable
    counts["frozen_parameters"] = frozen
    counts["total_parameters"] = trainable + frozen
    return counts


def load_eva_vit_g(weights: str, vision: VisionConfig) -> dict[str, torch.Tensor]:
    """Fetch (by source name or path), verify, read and convert BLIP-2's ``eva_vit_g.pth``."""
    from emotion_llama.sources import fetch

    path = fetch(weights)
    raw = read_torch_file(path)
    if isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        raw = raw["model"]
    return convert_eva_state(raw, vision, path)
