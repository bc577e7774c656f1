"""Checkpoints: the project's own folder format, the authors' ``.pth`` files, BLIP-2's EVA ViT-g,
and the merged Hugging Face export.

The project's format is a folder::

    config.json            EmotionLlamaConfig as JSON
    model.safetensors      the trainable weights (LoRA + five projections), under the authors'
                           key names (``llama_model.base_model.model....lora_A.weight``...)
    frozen.safetensors     only when a frozen part has no external source (random weights)

The key tables and conversions are pure functions in ``keys.py``; weight files are read and
written through ``emotion_llama.weights``; this module is the folder format and its edges.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.errors import CheckpointError
from emotion_llama.model.builder import (
    base_llm_state_dict,
    build_model,
    frozen_state_dict,
    load_eva_vit_g,
    resolve_llm_sizes,
)
from emotion_llama.model.keys import (
    PROJECTIONS,
    check_trainable_state,
    convert_authors_state,
    convert_eva_state,
    expected_trainable_shapes,
    few_keys,
    interpolate_position_embedding,
    merge_lora_state,
    to_canonical_key,
    to_module_key,
)
from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.weights import read_safetensors, read_torch_file, write_safetensors

# The key functions are part of this module's interface too (the CLI and users import them here).
__all__ = [
    "CONFIG_FILE",
    "FROZEN_FILE",
    "WEIGHTS_FILE",
    "check_trainable_state",
    "convert_authors_checkpoint",
    "convert_authors_state",
    "convert_eva_state",
    "expected_trainable_shapes",
    "export_merged",
    "interpolate_position_embedding",
    "load_eva_vit_g",
    "load_pretrained",
    "load_trainable",
    "merge_lora_state",
    "read_authors_checkpoint",
    "read_safetensors",
    "read_torch_file",
    "save_pretrained",
    "trainable_state",
    "write_safetensors",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FROZEN_FILE = "frozen.safetensors"


# -- reading files ------------------------------------------------------------------------------
def read_authors_checkpoint(path: str | Path) -> dict[str, Any]:
    obj = read_torch_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict of tensors, found a {type(obj).__name__}")
    state = obj.get("model", obj)
    if not isinstance(state, dict):
        raise CheckpointError(path, "its 'model' entry is not a dict of tensors")
    return state


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
            f"not in the model: {few_keys(not_in_model)}; not in the checkpoint: {few_keys(uncovered)}",
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


# -- merged export ------------------------------------------------------------------------------
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
