"""Key conversions from the original MAE / VideoMAE repositories to transformers' classes.

The authors' local and temporal encoders are checkpoints written by the original training code
(``mae_checkpoint-340.pth``: MAE ViT-L/16 pretraining on MER2023 faces; the VideoMAE "399"
checkpoint: VideoMAE ViT-L/16 pretraining). Both are timm-style pre-norm ViTs::

    blocks.{i}.norm1 -> attn (qkv fused) -> attn.proj -> + residual
    blocks.{i}.norm2 -> mlp.fc1 -> GELU -> mlp.fc2 -> + residual

MAE keeps a fused ``attn.qkv.bias``; VideoMAE keeps ``q_bias`` and ``v_bias`` (no k bias) like
EVA. The functions here are pure dict -> dict maps (files are read by the builders in
:mod:`emotion_llama.encoders.models`); a missing key, an unknown key or a wrong shape raises
:class:`~emotion_llama.errors.CheckpointError` naming them, since silently dropping, say, a
layer-scale ``gamma_1`` would give wrong features without any other sign.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import VideoMAEConfig, ViTMAEConfig

from emotion_llama.errors import CheckpointError
from emotion_llama.weights import shape_mismatches

#: Parts of the pretraining checkpoints that the encoder does not use (the pixel decoder, its
#: mask token, a classification head).
MAE_IGNORED = ("decoder_", "mask_token", "head.")
VIDEOMAE_IGNORED = ("decoder.", "encoder_to_decoder.", "mask_token", "head.")

#: Attention heads of the standard ViT widths. A checkpoint stores no head count (the fused qkv
#: matrix has the same shape for any split), so it has to be known from the width.
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}

#: LayerNorm eps of the original code (timm blocks built with ``partial(nn.LayerNorm, eps=1e-6)``);
#: transformers' configs default to 1e-12.
ORIGINAL_LN_EPS = 1e-6


def heads_for_width(width: int) -> int:
    """Heads of a ViT of this width: the standard table, else 64-wide heads, else the tiny rule
    (4, 2 or 1 heads) that :func:`emotion_llama.encoders.models.tiny_mae_config` uses."""
    if width in STANDARD_HEADS:
        return STANDARD_HEADS[width]
    if width % 64 == 0:
        return width // 64
    return next(h for h in (4, 2, 1) if width % h == 0)


def _few(items: list[str], n: int = 5) -> str:
    head = ", ".join(items[:n])
    return head + (f", ... and {len(items) - n} more" if len(items) > n else "")


def unwrap_state(sd: Mapping[str, Any]) -> dict[str, Any]:
    """The tensors of a training checkpoint: its ``model`` (or ``module``/``state_dict``) entry when
    there is one, with DDP's ``module.`` prefix removed."""
    for key in ("model", "module", "state_dict"):
        inner = sd.get(key)
        if isinstance(inner, Mapping):
            sd = inner
            break
    return {str(k).removeprefix("module."): v for k, v in sd.items()}


def _block_count(raw: Mapping[str, Any]) -> int:
    ids = {int(k.split(".")[1]) for k in raw if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    return max(ids) + 1 if ids else 0


def _require(raw: Mapping[str, Any], keys: list[str], what: str, source: str | Path | None) -> None:
    missing = [k for k in keys if k not in raw]
    if missing:
        raise CheckpointError(source, f"{len(missing)} {what} key(s) missing: {_few(missing)}")
    not_tensors = [k for k in keys if not isinstance(raw[k], torch.Tensor)]
    if not_tensors:
        raise CheckpointError(source, f"{what} entries that are not tensors: {_few(not_tensors)}")


def _check_rest(
    raw: Mapping[str, Any], used: set[str], ignored: tuple[str, ...], what: str, source: str | Path | None
) -> None:
    unexpected = sorted(k for k in raw if k not in used and not k.startswith(ignored))
    if unexpected:
        raise CheckpointError(
            source, f"{len(unexpected)} unexpected {what} key(s) (another architecture?): {_few(unexpected)}"
        )


def _check_shapes(
    out: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], what: str, source: str | Path | None
) -> None:
    wrong = shape_mismatches(out, expected)
    if wrong:
        raise CheckpointError(
            source, f"{len(wrong)} {what} tensor(s) do not fit the encoder config: {_few(wrong, 3)}"
        )


def _split_qkv(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused (3D, ...) projection -> q, k, v, in that order (timm's layout)."""
    q, k, v = w.chunk(3, dim=0)
    return q, k, v


# -- MAE -> ViTMAEModel --------------------------------------------------------------------------
_BLOCK_PAIRS_MAE = (
    ("norm1", "layernorm_before"),
    ("norm2", "layernorm_after"),
    ("attn.proj", "attention.o_proj"),
    ("mlp.fc1", "mlp.fc1"),
    ("mlp.fc2", "mlp.fc2"),
)


_PATCH_PAIR = (("patch_embed.proj", "embeddings.patch_embeddings.projection"),)


def _pair_keys(prefix: str, pairs: tuple[tuple[str, str], ...]) -> list[str]:
    """The weight and bias keys of ``pairs``' original names under ``prefix``."""
    return [f"{prefix}{src}.{wb}" for src, _ in pairs for wb in ("weight", "bias")]


def _copy_pairs(
    out: dict[str, torch.Tensor],
    raw: Mapping[str, Any],
    pairs: tuple[tuple[str, str], ...],
    src: str,
    dst: str,
) -> None:
    """``out[dst + new.weight/bias] = raw[src + old.weight/bias]`` for each (old, new) of ``pairs``."""
    for old, new in pairs:
        for wb in ("weight", "bias"):
            out[f"{dst}{new}.{wb}"] = raw[f"{src}{old}.{wb}"]


def _mae_expected_shapes(config: ViTMAEConfig) -> dict[str, tuple[int, ...]]:
    d, inter, p, c = config.hidden_size, config.intermediate_size, config.patch_size, config.num_channels
    n = (config.image_size // p) ** 2
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.cls_token": (1, 1, d),
        "embeddings.position_embeddings": (1, n + 1, d),
        "embeddings.patch_embeddings.projection.weight": (d, c, p, p),
        "embeddings.patch_embeddings.projection.bias": (d,),
        "layernorm.weight": (d,),
        "layernorm.bias": (d,),
    }
    for i in range(config.num_hidden_layers):
        t = f"layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{t}attention.{name}.weight"] = (d, d)
            if name == "o_proj" or config.qkv_bias:
                shapes[f"{t}attention.{name}.bias"] = (d,)
        for ln in ("layernorm_before", "layernorm_after"):
            shapes[f"{t}{ln}.weight"] = (d,)
            shapes[f"{t}{ln}.bias"] = (d,)
        shapes[f"{t}mlp.fc1.weight"] = (inter, d)
        shapes[f"{t}mlp.fc1.bias"] = (inter,)
        shapes[f"{t}mlp.fc2.weight"] = (d, inter)
        shapes[f"{t}mlp.fc2.bias"] = (d,)
    return shapes


def convert_mae_state(
    sd: Mapping[str, Any], config: ViTMAEConfig, source: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The original MAE repo's keys -> ``ViTMAEModel`` keys (load with ``strict=True``).

    ``cls_token``, ``pos_embed`` (the fixed 2-D sin-cos table, stored in the file), ``patch_embed.
    proj``, ``blocks.{i}.*`` and the final ``norm`` are mapped; the fused ``attn.qkv`` weight and
    bias are split into ``q_proj``/``k_proj``/``v_proj``. The decoder (``decoder_*``),
    ``mask_token`` and a ``head`` are ignored. The ``norm`` is required: the local feature is the
    CLS token after it (SPEC 2.1), which a fine-tuned global-pool file (``fc_norm`` only) lacks.
    """
    raw = unwrap_state(sd)
    layers = config.num_hidden_layers
    needed = ["cls_token", "pos_embed", *_pair_keys("", _PATCH_PAIR), "norm.weight", "norm.bias"]
    for i in range(layers):
        b = f"blocks.{i}."
        needed += _pair_keys(b, _BLOCK_PAIRS_MAE)
        needed.append(f"{b}attn.qkv.weight")
        if config.qkv_bias:
            needed.append(f"{b}attn.qkv.bias")
    _require(raw, needed, "MAE", source)
    _check_rest(raw, set(needed), MAE_IGNORED, "MAE", source)

    out: dict[str, torch.Tensor] = {
        "embeddings.cls_token": raw["cls_token"],
        "embeddings.position_embeddings": raw["pos_embed"],
    }
    _copy_pairs(out, raw, (*_PATCH_PAIR, ("norm", "layernorm")), "", "")
    for i in range(layers):
        b, t = f"blocks.{i}.", f"layers.{i}."
        _copy_pairs(out, raw, _BLOCK_PAIRS_MAE, b, t)
        parts = ["q_proj", "k_proj", "v_proj"]
        for name, w in zip(parts, _split_qkv(raw[f"{b}attn.qkv.weight"]), strict=True):
            out[f"{t}attention.{name}.weight"] = w
        if config.qkv_bias:
            for name, bias in zip(parts, _split_qkv(raw[f"{b}attn.qkv.bias"]), strict=True):
                out[f"{t}attention.{name}.bias"] = bias
    _check_shapes(out, _mae_expected_shapes(config), "MAE", source)
    return out


def mae_config_from_state(sd: Mapping[str, Any], source: str | Path | None = None) -> ViTMAEConfig:
    """The ``ViTMAEConfig`` an original MAE checkpoint describes (width, depth, MLP size, patch and
    image size from the tensors; heads from :func:`heads_for_width`; eps 1e-6 as in the original
    code; ``mask_ratio=0``)."""
    raw = unwrap_state(sd)
    _require(
        raw, ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"], "MAE", source
    )
    width = int(raw["cls_token"].shape[-1])
    patch = int(raw["patch_embed.proj.weight"].shape[-1])
    n = int(raw["pos_embed"].shape[1]) - 1
    grid = math.isqrt(n)
    if grid * grid != n:
        raise CheckpointError(source, f"MAE pos_embed holds {n} patch positions, not a square grid")
    return ViTMAEConfig(
        hidden_size=width,
        num_hidden_layers=_block_count(raw),
        num_attention_heads=heads_for_width(width),
        intermediate_size=int(raw["blocks.0.mlp.fc1.weight"].shape[0]),
        image_size=grid * patch,
        patch_size=patch,
        num_channels=int(raw["patch_embed.proj.weight"].shape[1]),
        qkv_bias="blocks.0.attn.qkv.bias" in raw,
        layer_norm_eps=ORIGINAL_LN_EPS,
        mask_ratio=0.0,
    )


# -- VideoMAE -> VideoMAEModel -------------------------------------------------------------------
_BLOCK_PAIRS_VIDEOMAE = (
    ("norm1", "layernorm_before"),
    ("norm2", "layernorm_after"),
    ("attn.proj", "attention.output.dense"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
)


def videomae_position_table(num_positions: int, width: int) -> torch.Tensor:
    """(1, N, D): the fixed 1-D sinusoid table of the original VideoMAE (sin on even, cos on odd
    dimensions, frequency 10000^(2*(j//2)/D)), over the flattened (t, h, w) token order."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j = torch.arange(width, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / width)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


def _strip_encoder_prefix(raw: dict[str, Any]) -> dict[str, Any]:
    """A pretraining file keeps the encoder under ``encoder.`` beside ``decoder.`` and
    ``encoder_to_decoder``; a fine-tuned one has no prefix."""
    if not any(k.startswith("encoder.") for k in raw):
        return raw
    return {k.removeprefix("encoder.") if k.startswith("encoder.") else k: v for k, v in raw.items()}


def _videomae_expected_shapes(config: VideoMAEConfig) -> dict[str, tuple[int, ...]]:
    d, inter, p, c = config.hidden_size, config.intermediate_size, config.patch_size, config.num_channels
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.patch_embeddings.projection.weight": (d, c, config.tubelet_size, p, p),
        "embeddings.patch_embeddings.projection.bias": (d,),
    }
    for i in range(config.num_hidden_layers):
        t = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            shapes[f"{t}attention.attention.{name}.weight"] = (d, d)
        if config.qv_bias:
            shapes[f"{t}attention.attention.query.bias"] = (d,)
            shapes[f"{t}attention.attention.value.bias"] = (d,)
        for ln in ("layernorm_before", "layernorm_after"):
            shapes[f"{t}{ln}.weight"] = (d,)
            shapes[f"{t}{ln}.bias"] = (d,)
        for name, rows, cols in (
            ("attention.output.dense", d, d),
            ("intermediate.dense", inter, d),
            ("output.dense", d, inter),
        ):
            shapes[f"{t}{name}.weight"] = (rows, cols)
            shapes[f"{t}{name}.bias"] = (rows,)
    norm = "fc_norm" if config.use_mean_pooling else "layernorm"
    shapes[f"{norm}.weight"] = (d,)
    shapes[f"{norm}.bias"] = (d,)
    return shapes


def convert_videomae_state(
    sd: Mapping[str, Any], config: VideoMAEConfig, source: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The original VideoMAE repo's keys -> ``VideoMAEModel`` keys.

    Keys may carry the pretraining model's ``encoder.`` prefix; the decoder, ``encoder_to_decoder``
    and ``mask_token`` are ignored. ``blocks.{i}.attn.qkv.weight`` is split into query/key/value,
    ``q_bias``/``v_bias`` become the query/value biases (the key has none). The final norm:

    * ``norm`` (pretraining checkpoints, ``config.use_mean_pooling=False``) -> ``layernorm``,
      applied by ``VideoMAEModel`` to every token before the mean;
    * ``fc_norm`` (fine-tuned checkpoints, ``config.use_mean_pooling=True``) -> ``fc_norm.*``,
      which is **not** a ``VideoMAEModel`` key: it normalises the token mean, and the builder
      hands it to :class:`~emotion_llama.encoders.models.TemporalEncoder` (pop it before a strict
      load).

    The position table is fixed (not a parameter); a stored ``pos_embed`` is accepted only when it
    equals that table, since ``VideoMAEModel`` cannot hold a learned one.
    """
    raw = _strip_encoder_prefix(unwrap_state(sd))
    layers = config.num_hidden_layers
    norm = "fc_norm" if config.use_mean_pooling else "norm"
    needed = [*_pair_keys("", _PATCH_PAIR), f"{norm}.weight", f"{norm}.bias"]
    for i in range(layers):
        b = f"blocks.{i}."
        needed += _pair_keys(b, _BLOCK_PAIRS_VIDEOMAE)
        needed.append(f"{b}attn.qkv.weight")
        if config.qv_bias:
            needed += [f"{b}attn.q_bias", f"{b}attn.v_bias"]
    _require(raw, needed, "VideoMAE", source)
    used = set(needed)
    if "pos_embed" in raw:
        used.add("pos_embed")
        _check_position_table(raw["pos_embed"], config, source)
    _check_rest(raw, used, VIDEOMAE_IGNORED, "VideoMAE", source)

    out: dict[str, torch.Tensor] = {}
    _copy_pairs(out, raw, _PATCH_PAIR, "", "")
    for i in range(layers):
        b, t = f"blocks.{i}.", f"encoder.layer.{i}."
        _copy_pairs(out, raw, _BLOCK_PAIRS_VIDEOMAE, b, t)
        q, k, v = _split_qkv(raw[f"{b}attn.qkv.weight"])
        out[f"{t}attention.attention.query.weight"] = q
        out[f"{t}attention.attention.key.weight"] = k
        out[f"{t}attention.attention.value.weight"] = v
        if config.qv_bias:
            out[f"{t}attention.attention.query.bias"] = raw[f"{b}attn.q_bias"]
            out[f"{t}attention.attention.value.bias"] = raw[f"{b}attn.v_bias"]
    _copy_pairs(out, raw, ((norm, "fc_norm" if config.use_mean_pooling else "layernorm"),), "", "")
    _check_shapes(out, _videomae_expected_shapes(config), "VideoMAE", source)
    return out


def _check_position_table(pos: Any, config: VideoMAEConfig, source: str | Path | None) -> None:
    n = (config.num_frames // config.tubelet_size) * (config.image_size // config.patch_size) ** 2
    want = videomae_position_table(n, config.hidden_size)
    if (
        not isinstance(pos, torch.Tensor)
        or pos.numel() != want.numel()
        or not torch.allclose(pos.float().reshape(want.shape), want, atol=1e-4)
    ):
        raise CheckpointError(
            source,
            "VideoMAE pos_embed differs from the fixed sinusoid table for "
            f"{config.num_frames} frames at {config.image_size} px (learned or for another input size)",
        )


def videomae_config_from_state(
    sd: Mapping[str, Any], image_size: int, num_frames: int, source: str | Path | None = None
) -> VideoMAEConfig:
    """The ``VideoMAEConfig`` an original VideoMAE checkpoint describes. Frames and image size are
    not stored (the position table is computed, not saved) and come from the caller; heads from
    :func:`heads_for_width`; ``use_mean_pooling`` is True only for a file with ``fc_norm`` and no
    ``norm``."""
    raw = _strip_encoder_prefix(unwrap_state(sd))
    _require(raw, ["patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"], "VideoMAE", source)
    w = raw["patch_embed.proj.weight"]
    if w.ndim != 5:
        raise CheckpointError(
            source, f"VideoMAE patch_embed.proj.weight has shape {tuple(w.shape)}, not a Conv3d"
        )
    width, channels, tubelet, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2]), int(w.shape[3])
    return VideoMAEConfig(
        hidden_size=width,
        num_hidden_layers=_block_count(raw),
        num_attention_heads=heads_for_width(width),
        intermediate_size=int(raw["blocks.0.mlp.fc1.weight"].shape[0]),
        image_size=image_size,
        patch_size=patch,
        num_channels=channels,
        num_frames=num_frames,
        tubelet_size=tubelet,
        qv_bias="blocks.0.attn.q_bias" in raw,
        use_mean_pooling="norm.weight" not in raw and "fc_norm.weight" in raw,
        layer_norm_eps=ORIGINAL_LN_EPS,
    )
