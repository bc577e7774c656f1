"""Checkpoints: the project's own folder format, the authors' ``.pth`` files, BLIP-2's EVA ViT-g,
and the merged Hugging Face export.

The project's format is a folder::

    config.json            EmotionLlamaConfig as JSON
    model.safetensors      the trainable weights (LoRA + five projections), under the authors'
                           key names (``llama_model.base_model.model....lora_A.weight``...)
    frozen.safetensors     only when a frozen part has no external source (random weights)

The key conversions are pure dict-to-dict functions; files are read and written at the edges.
"""

from __future__ import annotations

import copy
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from emotion_llama.config import EmotionLlamaConfig, VisionConfig
from emotion_llama.errors import CheckpointError, ConfigError
from emotion_llama.model.builder import (
    PROJECTIONS,
    base_llm_state_dict,
    build_model,
    frozen_state_dict,
    resolve_llm_sizes,
    to_canonical_key,
    to_module_key,
)
from emotion_llama.model.modeling import EmotionLlama

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FROZEN_FILE = "frozen.safetensors"
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


# -- the key table -------------------------------------------------------------------------------
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


def _few(items: list[str], n: int = 5) -> str:
    head = ", ".join(items[:n])
    return head + (f", ... and {len(items) - n} more" if len(items) > n else "")


# -- reading files ------------------------------------------------------------------------------
def read_torch_file(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` and an error that names the file and says what is
    wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "the file is empty (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(4)
    is_zip_header = head.startswith(b"PK\x03\x04")
    if not is_zip_header and not head.startswith(b"\x80"):  # zip archive, or a pickle (protocol 2+)
        raise CheckpointError(path, f"not a PyTorch checkpoint (starts with {head!r})")
    if is_zip_header and not zipfile.is_zipfile(path):
        raise CheckpointError(path, "truncated or corrupt: the zip archive has no central directory")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip_header)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        text = _first_sentence(str(exc)) or type(exc).__name__
        if "Unsupported global" in str(exc) or "Unsupported class" in str(exc):
            problem = "holds objects other than tensors; refused to unpickle (weights_only=True)"
        elif isinstance(exc, EOFError) or "central directory" in text or "truncated" in text:
            problem = f"truncated or corrupt ({text})"
        else:
            problem = f"not a readable PyTorch checkpoint ({text})"
        raise CheckpointError(path, problem) from None


def _first_sentence(text: str, limit: int = 160) -> str:
    """The informative part of torch's loader messages (they open with generic advice)."""
    m = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if m:
        return m.group(1).strip().split(". ")[0][:limit]
    for line in text.splitlines():
        line = line.strip()
        if line and not line.lower().startswith(("weights only load failed", "please file")):
            return line.split(". ")[0][:limit]
    return ""


def read_authors_checkpoint(path: str | Path) -> dict[str, Any]:
    obj = read_torch_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict of tensors, found a {type(obj).__name__}")
    state = obj.get("model", obj)
    if not isinstance(state, dict):
        raise CheckpointError(path, "its 'model' entry is not a dict of tensors")
    return state


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"not a readable safetensors file ({exc})") from None


def write_safetensors(state: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    """Atomic: a crash never leaves a half-written file under the final name."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600 files; follow the user's umask
    tmp.replace(path)


# -- the project's own format -------------------------------------------------------------------
def trainable_state(model: EmotionLlama) -> dict[str, torch.Tensor]:
    """The trainable weights under the authors' key names."""
    return {to_canonical_key(k): p.detach() for k, p in model.named_parameters() if p.requires_grad}


def save_pretrained(model: EmotionLlama, out_dir: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (and ``frozen.safetensors`` when the frozen
    weights have no source to reload them from)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config
    write_safetensors(trainable_state(model), out / WEIGHTS_FILE, {"format": "emotion-llama"})
    frozen = frozen_state_dict(model)
    if frozen:
        write_safetensors(frozen, out / FROZEN_FILE, {"format": "emotion-llama"})
    config.to_json(out / CONFIG_FILE)
    return out


def check_trainable_state(
    state: dict[str, torch.Tensor], config: EmotionLlamaConfig, source: str | Path | None
) -> None:
    """Exactly the expected keys, each with the expected shape, or a :class:`CheckpointError`."""
    expected = expected_trainable_shapes(config)
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(source, f"{len(missing)} expected key(s) missing: {_few(missing)}")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointError(source, f"{len(extra)} unexpected key(s): {_few(extra)}")
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
        for k in expected
        if tuple(state[k].shape) != expected[k]
    ]
    if wrong:
        raise CheckpointError(
            source,
            f"{len(wrong)} tensor(s) of the wrong shape for preset {config.name!r} (a checkpoint "
            f"of another preset?): {_few(wrong)}",
        )


def load_trainable(model: EmotionLlama, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load canonical trainable weights strictly: every trainable parameter must be covered."""
    check_trainable_state(state, model.config, source)
    params = dict(model.named_parameters())
    targets = {to_module_key(k): v for k, v in state.items()}
    not_in_model = [k for k in targets if k not in params]
    uncovered = [k for k, p in params.items() if p.requires_grad and k not in targets]
    if not_in_model or uncovered:
        raise CheckpointError(
            source,
            "checkpoint keys and model parameters disagree: "
            f"not in the model: {_few(not_in_model)}; not in the checkpoint: {_few(uncovered)}",
        )
    with torch.no_grad():
        for k, v in targets.items():
            params[k].copy_(v.to(params[k].dtype))


def load_pretrained(
    model_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> EmotionLlama:
    """Build the model a checkpoint folder describes and load its weights strictly."""
    root = Path(model_dir)
    if not root.is_dir():
        raise CheckpointError(root, "not a checkpoint folder (expected config.json and model.safetensors)")
    config = EmotionLlamaConfig.from_json(root / CONFIG_FILE)
    state = read_safetensors(root / WEIGHTS_FILE)
    frozen = read_safetensors(root / FROZEN_FILE) if (root / FROZEN_FILE).exists() else {}
    need = [
        p
        for p, src in (("global_encoder.", config.vision.weights), ("llm_base.", config.llm.name_or_path))
        if src is None and not any(k.startswith(p) for k in frozen)
    ]
    if need:
        raise CheckpointError(
            root,
            f"the config names no source for {', '.join(n.rstrip('.') for n in need)} and "
            f"{FROZEN_FILE} does not hold it",
        )
    config = resolve_llm_sizes(config)
    check_trainable_state(state, config, root / WEIGHTS_FILE)
    try:
        model = build_model(config, dtype=dtype, frozen_state=frozen)
    except RuntimeError as exc:
        raise CheckpointError(root / FROZEN_FILE, f"does not fit the config: {exc}") from None
    load_trainable(model, state, root / WEIGHTS_FILE)
    return model.to(device)


# -- the authors' checkpoints --------------------------------------------------------------------
def convert_authors_checkpoint(
    pth: str | Path, config: EmotionLlamaConfig, out_dir: str | Path
) -> tuple[Path, list[str]]:
    """An authors' ``.pth`` -> a project checkpoint folder. Needs no base-model weights: only the
    trainable part is mapped. Returns the folder and the unexpected keys that were skipped."""
    config = config.validate()
    raw = read_authors_checkpoint(pth)
    state, unexpected = convert_authors_state(raw, config, pth)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(state, out / WEIGHTS_FILE, {"format": "emotion-llama", "source": Path(pth).name})
    config.to_json(out / CONFIG_FILE)
    return out, unexpected


# -- EVA ViT-g from BLIP-2 -----------------------------------------------------------------------
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
            source, f"the file has blocks {_few(extra_blocks)} beyond vision.num_layers={vision.num_layers}"
        )
    expected_width = vision.hidden_size
    if out["embeddings.class_embedding"].shape[-1] != expected_width:
        raise CheckpointError(
            source,
            f"EVA width {out['embeddings.class_embedding'].shape[-1]} != vision.hidden_size {expected_width}",
        )
    return out


def load_eva_vit_g(weights: str, vision: VisionConfig) -> dict[str, torch.Tensor]:
    """Fetch (by source name or path), verify, read and convert BLIP-2's ``eva_vit_g.pth``."""
    from emotion_llama.sources import fetch

    path = fetch(weights)
    raw = read_torch_file(path)
    if isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        raw = raw["model"]
    return convert_eva_state(raw, vision, path)


# -- merged export ------------------------------------------------------------------------------
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


def export_merged(model_dir: str | Path, out_dir: str | Path) -> Path:
    """A checkpoint folder -> ``out/llm`` (a plain Hugging Face model with LoRA merged, loadable by
    ``transformers`` alone, with its tokenizer), ``out/projections.safetensors`` and
    ``out/config.json``; ``out/global_encoder.safetensors`` too when the ViT has no source."""
    from emotion_llama.model.tokenizer import load_tokenizer

    model = load_pretrained(model_dir)
    config = model.config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lora = {k: v for k, v in trainable_state(model).items() if ".lora_" in k}
    base = base_llm_state_dict(model)
    merged = merge_lora_state(base, lora, config.lora.scale)
    from transformers import AutoModelForCausalLM

    base_config = copy.deepcopy(model.llm.get_base_model().config)
    plain = AutoModelForCausalLM.from_config(base_config, dtype=next(model.llm.parameters()).dtype)
    plain.load_state_dict(merged, strict=True)
    plain.save_pretrained(out / "llm")
    try:
        load_tokenizer(config).save_pretrained(out / "llm")
    except Exception as exc:  # the export is still usable with the base model's tokenizer
        (out / "llm" / "TOKENIZER_MISSING.txt").write_text(f"tokenizer not saved: {exc}\n")
    projections = {k: v for k, v in trainable_state(model).items() if k.split(".")[0] in PROJECTIONS}
    write_safetensors(projections, out / "projections.safetensors", {"format": "emotion-llama"})
    if config.vision.weights is None:
        write_safetensors(
            {k: v for k, v in model.global_encoder.state_dict().items()},
            out / "global_encoder.safetensors",
            {"format": "emotion-llama"},
        )
    info = config.to_dict()
    info["merged"] = {"llm": "llm", "lora_scale": config.lora.scale}
    (out / "config.json").write_text(json.dumps(info, indent=2) + "\n")
    return out
