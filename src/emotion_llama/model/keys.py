"""The checkpoint key tables and conversions: pure dict-to-dict functions, no file access.

- module names of :class:`EmotionLlama` <-> the authors' key names (PEFT's ``.default.`` adapter
  segment, which old PEFT omitted and a modern PEFT needs);
- the expected trainable keys and shapes of a config (SPEC 3), checked strictly;
- the authors' ``.pth`` state -> the project's trainable state;
- BLIP-2's EVA ViT-g names -> transformers' ``Blip2VisionModel`` names, position grid resized;
- LoRA merged into the base weights (W' = W + scale * B @ A).

Files are read and written at the edges (:mod:`emotion_llama.weights`, ``checkpoint.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from emotion_llama.config import EmotionLlamaConfig, VisionConfig
from emotion_llama.errors import CheckpointError, ConfigError
from emotion_llama.weights import shape_mismatches

ADAPTER = "default"
_LORA_MODULE_KEY = re.compile(r"\.lora_([AB])\.default\.")
_LORA_CANON_KEY = re.compile(r"\.lora_([AB])\.(weight|bias)$")


def to_canonical_key(module_key: str) -> str:
    """Module name in :class:`EmotionLlama` -> the authors' checkpoint key name.

    ``llm.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight``
    -> ``llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``
    """
    if module_key.startswith("llm."):
        module_key = "llama_model." + module_key[len("llm.") :]
    return _LORA_MODULE_KEY.sub(r".lora_\1.", module_key)


def to_module_key(canonical_key: str) -> str:
    """Inverse of :func:`to_canonical_key`: inserts PEFT's adapter name, which old PEFT omitted
    (loading such keys with ``strict=False`` is how users silently lost every adapter)."""
    if canonical_key.startswith("llama_model."):
        canonical_key = "llm." + canonical_key[len("llama_model.") :]
    return _LORA_CANON_KEY.sub(rf".lora_\1.{ADAPTER}.\2", canonical_key)


def is_trainable_key(module_key: str) -> bool:
    return ".lora_" in module_key or module_key.split(".")[0] in PROJECTIONS


PROJECTIONS = (
    "llama_proj",
    "feats_llama_proj1",
    "feats_llama_proj2",
    "feats_llama_proj3",
    "cls_tk_llama_proj",
)

IGNORED_PREFIXES = ("attention.",)  # an unused fusion head in the authors' checkpoints

_MODULE_GROUP = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}


def expected_trainable_shapes(config: EmotionLlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every trainable key of the authors' format with its shape (SPEC 3), for ``config``."""
    m, v, f, r = config.llm, config.vision, config.features, config.lora.r
    if not m.sizes_known():
        raise ConfigError(f"config {config.name!r}: LLM sizes unknown; resolve them first")
    h = int(m.hidden_size)  # type: ignore[arg-type]
    head_dim = h // int(m.num_heads)  # type: ignore[arg-type]
    kv = int(m.num_kv_heads or m.num_heads) * head_dim  # type: ignore[arg-type]
    inter = int(m.intermediate_size)  # type: ignore[arg-type]
    io = {
        "q_proj": (h, h),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (h, h),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "down_proj": (inter, h),
    }
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(int(m.num_layers)):  # type: ignore[arg-type]
        for mod in config.lora.target_modules:
            if mod not in io:
                raise ConfigError(f"lora.target_modules: unsupported module {mod!r}")
            fan_in, fan_out = io[mod]
            prefix = f"llama_model.base_model.model.model.layers.{i}.{_MODULE_GROUP[mod]}.{mod}"
            shapes[f"{prefix}.lora_A.weight"] = (r, fan_in)
            shapes[f"{prefix}.lora_B.weight"] = (fan_out, r)
    proj_in = {
        "llama_proj": v.grouped_dim,
        "feats_llama_proj1": f.local_dim,
        "feats_llama_proj2": f.temporal_dim,
        "feats_llama_proj3": f.audio_dim,
        "cls_tk_llama_proj": v.hidden_size,
    }
    for name in PROJECTIONS:
        shapes[f"{name}.weight"] = (h, proj_in[name])
        shapes[f"{name}.bias"] = (h,)
    return shapes


def _normalise_authors_key(key: str) -> str:
    """Accept keys written by newer code too: drop PEFT's adapter segment and DDP's prefix."""
    key = key.removeprefix("module.")
    return re.sub(r"\.lora_([AB])\.default\.", r".lora_\1.", key)


def convert_authors_state(
    raw: dict[str, Any], config: EmotionLlamaConfig, source: str | Path | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The authors' state dict -> the project's trainable state (authors' key names, fp32).

    Strict: a missing key or a wrong shape raises :class:`CheckpointError` naming them;
    ``attention.*`` is ignored; other unexpected keys are returned for the caller to report.
    """
    expected = expected_trainable_shapes(config)
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in raw.items():
        if not isinstance(key, str):
            continue
        key = _normalise_authors_key(key)
        if key.startswith(IGNORED_PREFIXES):
            continue
        if key not in expected:
            unexpected.append(key)
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(source, f"{key} is a {type(value).__name__}, not a tensor")
        state[key] = value
    check_trainable_state(state, config, source)
    return {k: state[k].float().contiguous() for k in expected}, unexpected


def few_keys(items: list[str], n: int = 5) -> str:
    head = ", ".join(items[:n])
    return head + (f", ... and {len(items) - n} more" if len(items) > n else "")


def check_trainable_state(
    state: dict[str, torch.Tensor], config: EmotionLlamaConfig, source: str | Path | None
) -> None:
    """Exactly the expected keys, each with the expected shape, or a :class:`CheckpointError`."""
    expected = expected_trainable_shapes(config)
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(source, f"{len(missing)} expected key(s) missing: {few_keys(missing)}")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointError(source, f"{len(extra)} unexpected key(s): {few_keys(extra)}")
    wrong = shape_mismatches(state, expected)
    if wrong:
        raise CheckpointError(
            source,
            f"{len(wrong)} tensor(s) of the wrong shape for preset {config.name!r} (a checkpoint "
            f"of another preset?): {few_keys(wrong)}",
        )


def interpolate_position_embedding(pos: torch.Tensor, new_grid: int) -> torch.Tensor:
    """(1, 1 + g*g, D) -> (1, 1 + G*G, D): the CLS row kept, the g x g grid resized bicubically
    (align_corners=False) to G x G, as the authors did at load time."""
    cls, grid = pos[:, :1], pos[:, 1:]
    old = round(grid.shape[1] ** 0.5)
    if old * old != grid.shape[1]:
        raise CheckpointError(None, f"position embedding of {grid.shape[1]} patches is not a square grid")
    if old == new_grid:
        return pos
    d = grid.shape[-1]
    img = grid.reshape(1, old, old, d).permute(0, 3, 1, 2).float()
    img = F.interpolate(img, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = img.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, d).to(pos.dtype)
    return torch.cat([cls, grid], dim=1)


def convert_eva_state(
    raw: dict[str, torch.Tensor], vision: VisionConfig, source: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """BLIP-2/LAVIS ``eva_vit_g.pth`` key names -> transformers ``Blip2VisionModel`` names (SPEC 2.1).

    The k bias does not exist in EVA (it is zero); transformers keeps one fused qkv bias, so it is
    written as concat(q_bias, zeros, v_bias). The final ``norm`` of EVA (absent in BLIP-2's file)
    and ``head`` are not used.
    """
    raw = {k.removeprefix("visual_encoder."): v for k, v in raw.items()}
    out: dict[str, torch.Tensor] = {}

    def take(key: str) -> torch.Tensor:
        if key not in raw:
            raise CheckpointError(source, f"EVA ViT-g key missing: {key}")
        return raw[key]

    out["embeddings.class_embedding"] = take("cls_token")
    out["embeddings.position_embedding"] = interpolate_position_embedding(take("pos_embed"), vision.grid)
    out["embeddings.patch_embedding.weight"] = take("patch_embed.proj.weight")
    out["embeddings.patch_embedding.bias"] = take("patch_embed.proj.bias")
    for i in range(vision.num_layers):
        b, t = f"blocks.{i}.", f"encoder.layers.{i}."
        for src, dst in (
            ("norm1", "layer_norm1"),
            ("norm2", "layer_norm2"),
            ("mlp.fc1", "mlp.fc1"),
            ("mlp.fc2", "mlp.fc2"),
            ("attn.proj", "self_attn.projection"),
        ):
            out[f"{t}{dst}.weight"] = take(f"{b}{src}.weight")
            out[f"{t}{dst}.bias"] = take(f"{b}{src}.bias")
        out[f"{t}self_attn.qkv.weight"] = take(f"{b}attn.qkv.weight")
        q_bias, v_bias = take(f"{b}attn.q_bias"), take(f"{b}attn.v_bias")
        out[f"{t}self_attn.qkv.bias"] = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
    extra_blocks = sorted(
        {k.split(".")[1] for k in raw if k.startswith("blocks.")} - {str(i) for i in range(vision.num_layers)}
    )
    if extra_blocks:
        raise CheckpointError(
            source,
            f"the file has blocks {few_keys(extra_blocks)} beyond vision.num_layers={vision.num_layers}",
        )
    expected_width = vision.hidden_size
    if out["embeddings.class_embedding"].shape[-1] != expected_width:
        raise CheckpointError(
            source,
            f"EVA width {out['embeddings.class_embedding'].shape[-1]} != vision.hidden_size {expected_width}",
        )
    return out


_BLIP2_LAYER_PARTS = (
    "layer_norm1",
    "layer_norm2",
    "mlp.fc1",
    "mlp.fc2",
    "self_attn.projection",
    "self_attn.qkv",
)


def blip2_vision_keys(vision: VisionConfig) -> list[str]:
    """The keys of ``Blip2VisionModel`` that the global encoder loads (its ``post_layernorm`` is
    not used: the authors' ViT has no final norm)."""
    keys = [
        "embeddings.class_embedding",
        "embeddings.position_embedding",
        "embeddings.patch_embedding.weight",
        "embeddings.patch_embedding.bias",
    ]
    for i in range(vision.num_layers):
        keys += [f"encoder.layers.{i}.{part}.{w}" for part in _BLIP2_LAYER_PARTS for w in ("weight", "bias")]
    return keys


def is_blip2_vision_state(raw: dict[str, Any]) -> bool:
    """Whether ``raw`` holds transformers' ``Blip2VisionModel`` names (a converted file, a BLIP-2
    hub model's ``vision_model.*`` tensors) rather than LAVIS's (``cls_token``, ``blocks.i``)."""
    return any(
        isinstance(k, str) and k.removeprefix("vision_model.") == "embeddings.class_embedding" for k in raw
    )


def blip2_vision_state(
    raw: dict[str, Any], vision: VisionConfig, source: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """Tensors under ``Blip2VisionModel`` names -> the global encoder's ViT state: a whole BLIP-2
    model's ``vision_model.*`` part (its Q-Former and language model are dropped), or a file
    written by ``convert eva``; ``post_layernorm`` left out, the position grid resized to the
    config's image size (a hub model is at 224 px). Strict about the keys the encoder needs."""
    if any(isinstance(k, str) and k.startswith("vision_model.") for k in raw):
        raw = {k[len("vision_model.") :]: v for k, v in raw.items() if k.startswith("vision_model.")}
    wanted = blip2_vision_keys(vision)
    missing = [k for k in wanted if k not in raw]
    if missing:
        raise CheckpointError(source, f"{len(missing)} ViT key(s) missing: {few_keys(missing)}")
    layers = {k.split(".")[2] for k in raw if k.startswith("encoder.layers.")}
    extra = sorted(layers - {str(i) for i in range(vision.num_layers)}, key=int)
    if extra:
        raise CheckpointError(
            source, f"the file has layers {few_keys(extra)} beyond vision.num_layers={vision.num_layers}"
        )
    out = {k: raw[k] for k in wanted}
    width = out["embeddings.class_embedding"].shape[-1]
    if width != vision.hidden_size:
        raise CheckpointError(source, f"ViT width {width} != vision.hidden_size {vision.hidden_size}")
    out["embeddings.position_embedding"] = interpolate_position_embedding(
        out["embeddings.position_embedding"], vision.grid
    )
    return out


def merge_lora_state(
    base: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], scale: float
) -> dict[str, torch.Tensor]:
    """W' = W + scale * B @ A for every adapted weight. ``base`` uses the plain LLM's key names
    (``model.layers.0.self_attn.q_proj.weight``), ``lora`` the authors' names."""
    merged = dict(base)
    prefix = "llama_model.base_model.model."
    for key, a in lora.items():
        if not key.endswith(".lora_A.weight"):
            continue
        target = key[len(prefix) :].replace(".lora_A.weight", ".weight")
        b = lora[key.replace(".lora_A.", ".lora_B.")]
        if target not in merged:
            raise CheckpointError(None, f"cannot merge {key}: the LLM has no {target}")
        w = merged[target]
        merged[target] = (w.float() + scale * (b.float() @ a.float())).to(w.dtype)
    return merged
