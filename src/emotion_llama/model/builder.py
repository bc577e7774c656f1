"""Builders: a config in, an :class:`EmotionLlama` out. Plain functions, no registries.

Weights come from, in this order: ``frozen_state`` (the frozen parts saved in a checkpoint
folder when they have no external source, e.g. the random ``tiny`` model), the sources the
config names (``llm.name_or_path``, ``vision.weights``), or a seeded random initialisation.
On ``device="meta"`` nothing is allocated and nothing is loaded (``inspect``).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from emotion_llama.config import EmotionLlamaConfig, VisionConfig
from emotion_llama.errors import CheckpointError, ConfigError
from emotion_llama.model.keys import (
    ADAPTER,
    PROJECTIONS,
    blip2_vision_state,
    convert_eva_state,
    is_blip2_vision_state,
    is_trainable_key,
)
from emotion_llama.model.modeling import EmotionLlama, GlobalEncoder
from emotion_llama.model.quantize import (
    bnb_config,
    check_trainable_quantization,
    dequantized_state_dict,
    quantization_of,
    quantize_linears,
)
from emotion_llama.weights import read_safetensors, read_torch_file

__all__ = ["ADAPTER", "build_model", "load_vision_weights", "parameter_counts", "set_trainable"]


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
        raise ConfigError(
            f"cannot read the config of LLM {m.name_or_path!r}: {exc}{_repoint_hint(m.name_or_path, '--llm')}"
        ) from None
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


def _repoint_hint(name: str, option: str) -> str:
    """For a local path that is not there: how to point a moved or copied checkpoint elsewhere."""
    if not Path(name).is_absolute() or Path(name).exists():
        return ""
    return (
        f" No such folder here: if this checkpoint was moved or copied from another machine, "
        f"re-point it with `emotion-llama repoint CKPT {option} PATH_OR_HUB_ID` (or edit its config.json)."
    )


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
    quantization: str | None = None,
    device: str | torch.device = "cpu",
) -> Any:
    """The plain Hugging Face causal LM (no adapters). Random weights when ``pretrained`` is
    false or the config names no model. A pretrained LLM with ``quantization`` (8bit/4bit) loads
    quantized onto ``device`` shard by shard (:mod:`emotion_llama.model.quantize`); a random one
    is quantized by the caller."""
    from transformers import AutoModelForCausalLM

    m = config.llm
    if pretrained and m.name_or_path is not None:
        extra: dict[str, Any] = {}
        if quantization is not None:
            extra = {
                "quantization_config": bnb_config(quantization, dtype),
                "device_map": {"": str(torch.device(device))},
            }
        try:
            return AutoModelForCausalLM.from_pretrained(
                m.name_or_path, dtype=dtype, revision=m.revision, **extra
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot load the LLM {m.name_or_path!r}: {exc}. Download it first (for LLaMA-2: "
                "accept the licence on the hub, `hf auth login`) or point llm.name_or_path at a "
                f"local folder.{_repoint_hint(m.name_or_path, '--llm')}"
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
    quantization: str | None = None,
) -> EmotionLlama:
    """The full model with LoRA attached; only LoRA and the five projections are trainable.
    ``quantization`` (``8bit``/``4bit``): the LLM's linear layers in bitsandbytes int8/NF4, LoRA
    on top of them (QLoRA); everything else stays in ``dtype``."""
    config.validate()
    quantization = check_trainable_quantization(quantization)  # fp8: load_pretrained's
    on_meta = torch.device(device).type == "meta"
    if on_meta:
        pretrained = False
        quantization = None  # counting parameters: the layout is the same
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
        from_hub = pretrained and not llm_state and config.llm.name_or_path is not None
        llm = build_llm(
            config,
            dtype=dtype,
            pretrained=pretrained and not llm_state,
            quantization=quantization if from_hub else None,
            device=target,
        )
        if llm_state:
            llm.load_state_dict(llm_state, strict=True)
        if quantization is not None and not from_hub:
            quantize_linears(llm, quantization, compute_dtype=dtype, device=target)
        encoder = GlobalEncoder(config.vision).to(dtype)
        if enc_state:
            encoder.load_state_dict(enc_state, strict=True)
        elif pretrained and config.vision.weights is not None:
            encoder.vit.load_state_dict(load_vision_weights(config.vision.weights, config.vision))
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
    if quantization_of(base) is not None:  # a QLoRA base: the weights it computes with
        state = dequantized_state_dict(base, model.llama_proj.weight.dtype)
    else:
        state = base.state_dict()
    return {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}


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


def load_vision_weights(weights: str, vision: VisionConfig) -> dict[str, torch.Tensor]:
    """The global encoder's ViT state from what ``vision.weights`` names: a source name (the
    ``eva_vit_g`` download), BLIP-2's LAVIS ``eva_vit_g.pth`` (converted, grid interpolated), a
    ``.safetensors`` written by ``emotion-llama convert eva`` (read as it is: no 4 GB pickle to
    convert again), a BLIP-2 model folder or hub id (e.g. ``Salesforce/blip2-opt-2.7b``: only its
    vision tower's tensors are read), or a ``Blip2VisionModel`` folder."""
    from emotion_llama.sources import SOURCES, fetch

    local = Path(weights).expanduser()
    if weights in SOURCES or "://" in weights:
        path = fetch(weights)
    elif local.exists():
        path = local
    elif _looks_like_hub_id(weights):
        path = _hub_vision_folder(weights)
    else:
        raise CheckpointError(
            local,
            "vision.weights names no such file or folder, no source and no hub model (give BLIP-2's "
            "eva_vit_g.pth, a converted .safetensors, a BLIP-2 folder or hub id, or the source name "
            "eva_vit_g)." + _repoint_hint(weights, "--vision"),
        )
    if path.is_dir():
        return blip2_vision_state(_vision_tensors_of_folder(path), vision, path)
    if _is_safetensors(path):
        return blip2_vision_state(read_safetensors(path), vision, path)
    raw = read_torch_file(path)
    if isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        raw = raw["model"]
    if not isinstance(raw, dict):
        raise CheckpointError(path, f"expected a dict of tensors, found a {type(raw).__name__}")
    if is_blip2_vision_state(raw):
        return blip2_vision_state(raw, vision, path)
    return convert_eva_state(raw, vision, path)


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~"))


def _is_safetensors(path: Path) -> bool:
    """By name, or by content: an 8-byte little-endian header length, then the JSON header."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 32)


def _vision_tensors_of_folder(folder: Path) -> dict[str, torch.Tensor]:
    """The ``vision_model.*`` tensors of a Hugging Face model folder (every tensor of a
    ``Blip2VisionModel`` folder), reading only the shards that hold them."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        vision = {k: f for k, f in weight_map.items() if k.startswith("vision_model.")} or weight_map
        shards = sorted(set(vision.values()))
    elif (folder / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        bins = sorted(p.name for p in folder.glob("pytorch_model*.bin"))
        if not bins:
            raise CheckpointError(folder, "holds no model.safetensors (or shards) and no pytorch_model.bin")
        state: dict[str, torch.Tensor] = {}
        for name in bins:
            state.update(read_torch_file(folder / name))
        return state
    out: dict[str, torch.Tensor] = {}
    for shard in shards:
        with safe_open(str(folder / shard), framework="pt") as fh:
            keys = list(fh.keys())
            prefixed = [k for k in keys if k.startswith("vision_model.")]
            for k in prefixed or keys:
                out[k] = fh.get_tensor(k)
    return out


def _hub_vision_folder(repo: str) -> Path:
    """A local folder with a hub BLIP-2 model's configs and only the weight shards that hold its
    vision tower (a few hundred MB of BLIP-2 OPT-2.7B's 15 GB)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        folder = Path(snapshot_download(repo, allow_patterns=["*.json"]))
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            for shard in sorted({f for k, f in weight_map.items() if k.startswith("vision_model.")}):
                hf_hub_download(repo, shard)
        else:
            hf_hub_download(repo, "model.safetensors")
    except Exception as exc:  # the hub client raises many types; all mean "not available"
        raise CheckpointError(repo, f"cannot fetch the BLIP-2 vision tower from the hub: {exc}") from None
    return folder
