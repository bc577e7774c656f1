"""Checkpoints: the project's own folder format, the authors' ``.pth`` files, BLIP-2's EVA ViT-g,
and the merged Hugging Face export.

The project's format is a folder::

    config.json            EmotionLlamaConfig as JSON
    model.safetensors      the trainable weights (LoRA + five projections), under the authors'
                           key names (``llama_model.base_model.model....lora_A.weight``...)
    frozen.safetensors     only when a frozen part has no external source (random weights)

A training run folder holds such checkpoints (``epoch_{k}/``, ``step_{N}/``), the ``best`` and
``last`` pointer files naming one of them (JSON ``{"dir": ...}``) and ``train_clips.txt``, the
names of the clips it trained on. :func:`resolve_checkpoint` turns any of these into the
checkpoint folder, and every command that takes a checkpoint goes through it.

The key tables and conversions are pure functions in ``keys.py``; weight files are read and
written through ``emotion_llama.weights``; this module is the folder format and its edges.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from emotion_llama.config import EmotionLlamaConfig, portable_paths
from emotion_llama.errors import CheckpointError
from emotion_llama.model.builder import (
    base_llm_state_dict,
    build_model,
    frozen_state_dict,
    load_vision_weights,
    resolve_llm_sizes,
)
from emotion_llama.model.fp8 import check_fp8_device, to_fp8
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
from emotion_llama.model.quantize import check_quantization
from emotion_llama.weights import read_safetensors, read_torch_file, write_safetensors

# The key functions are part of this module's interface too (the CLI and users import them here).
__all__ = [
    "BEST_FILE",
    "CONFIG_FILE",
    "FROZEN_FILE",
    "LAST_FILE",
    "TRAIN_CLIPS_FILE",
    "WEIGHTS_FILE",
    "authors_state_of",
    "check_trainable_state",
    "convert_authors_checkpoint",
    "convert_authors_state",
    "convert_eva_state",
    "expected_trainable_shapes",
    "export_merged",
    "interpolate_position_embedding",
    "is_checkpoint_folder",
    "load_pretrained",
    "load_trainable",
    "load_vision_weights",
    "merge_lora_state",
    "read_authors_checkpoint",
    "read_safetensors",
    "read_torch_file",
    "repoint",
    "resolve_checkpoint",
    "save_pretrained",
    "trainable_state",
    "write_safetensors",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FROZEN_FILE = "frozen.safetensors"
#: The pointer files of a run folder: the lowest validation loss, and the newest checkpoint.
BEST_FILE = "best"
LAST_FILE = "last"
#: In a run folder: the names of the clips it trained on, one per line (sorted).
TRAIN_CLIPS_FILE = "train_clips.txt"


# -- reading files ------------------------------------------------------------------------------
def read_authors_checkpoint(path: str | Path) -> dict[str, Any]:
    return authors_state_of(read_torch_file(path), path)


def authors_state_of(obj: Any, path: str | Path) -> dict[str, Any]:
    """The tensors of an authors' ``torch.save`` dict (``ckpt.get("model", ckpt)``)."""
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict of tensors, found a {type(obj).__name__}")
    state = obj.get("model", obj)
    if not isinstance(state, dict):
        raise CheckpointError(path, "its 'model' entry is not a dict of tensors")
    return state


def _provenance(obj: Any, pth: Path) -> dict[str, str]:
    """What a converted folder's ``model.safetensors`` records of the file it came from: its name
    and sha256, and the training config and epoch the authors' runner saved beside the weights
    (the config's data sets tell the reasoning model from the classifiers: ``emotion-llama
    doctor`` reads them)."""
    from emotion_llama.sources import sha256_of

    meta = {"source": pth.name, "source_sha256": sha256_of(pth)}
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
        meta["authors_config"] = json.dumps(obj["config"], default=str, sort_keys=True)
    if isinstance(obj, dict) and obj.get("epoch") is not None:
        meta["authors_epoch"] = str(obj["epoch"])
    return meta


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


# -- finding the checkpoint: a folder, a run folder, a pointer ---------------------------------------
def is_checkpoint_folder(path: str | Path) -> bool:
    """Whether ``path`` is a project checkpoint folder (``config.json`` and ``model.safetensors``)."""
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file()


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


def _pointer_target(pointer: Path) -> tuple[Path, str]:
    """The checkpoint folder a ``best``/``last`` pointer file names, and what it says of it."""
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("dir"), str):
        hint = ""
        if pointer.suffix.lower() in (".pth", ".pt"):
            hint = "; an authors' .pth becomes a checkpoint folder with `emotion-llama convert authors`"
        raise CheckpointError(
            pointer,
            'a file, but not a checkpoint pointer (a run folder\'s best or last: JSON {"dir": ...}); '
            f"give a checkpoint folder (config.json + model.safetensors) or a run folder{hint}",
        )
    target = pointer.parent / data["dir"]
    if not is_checkpoint_folder(target):
        raise CheckpointError(pointer, f"points at {target}, which is not a checkpoint folder (missing?)")
    facts = [f"epoch {data['epoch']}"] if "epoch" in data else []
    if isinstance(data.get("val_loss"), (int, float)):
        facts.append(f"validation loss {data['val_loss']:.4f}")
    elif "step" in data:
        facts.append(f"step {data['step']}")
    return target, f" ({', '.join(facts)})" if facts else ""


def _run_checkpoints(run: Path) -> list[Path]:
    """The ``epoch_{k}``/``step_{N}`` checkpoint folders of a run, oldest written first."""
    found = []
    for p in run.iterdir():
        prefix, _, number = p.name.partition("_")
        if prefix in ("epoch", "step") and number.isdigit() and is_checkpoint_folder(p):
            found.append(((p / WEIGHTS_FILE).stat().st_mtime, int(number), p))
    return [p for *_, p in sorted(found)]


def _what_is_in(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"it holds {shown}"


def resolve_checkpoint(
    path: str | Path, *, prefer: Sequence[str] = (BEST_FILE, LAST_FILE), quiet: bool = False
) -> Path:
    """The checkpoint folder ``path`` stands for: a checkpoint folder itself (or its
    ``config.json``/``model.safetensors``); a run folder's ``best`` or ``last`` pointer file; a
    run folder (the checkpoint of its first pointer in ``prefer`` that names one, else its newest
    ``epoch_{k}``/``step_{N}``). Which one a run folder or pointer led to is said on stderr
    (unless ``quiet``). Anything else is a :class:`CheckpointError` naming the path and what is
    there."""
    note = (lambda text: None) if quiet else _note
    p = Path(path)
    if p.is_dir() and is_checkpoint_folder(p):
        return p
    if p.is_file():
        if p.name in (CONFIG_FILE, WEIGHTS_FILE) and is_checkpoint_folder(p.parent):
            return p.parent
        target, facts = _pointer_target(p)
        note(f"{p} points at the checkpoint {target}{facts}")
        return target
    if not p.is_dir():
        raise CheckpointError(
            p, "not a checkpoint folder, a run folder or a pointer file: no such file or folder"
        )
    problems = []
    for which in prefer:
        if (p / which).is_file():
            try:
                target, facts = _pointer_target(p / which)
            except CheckpointError as exc:
                problems.append(str(exc))
                continue
            note(f"{p} is a run folder: using its {which} checkpoint {target.name}{facts}")
            return target
    found = _run_checkpoints(p)
    if found:
        why = "; ".join(problems) if problems else f"it has no {' or '.join(prefer)} pointer"
        note(f"{p} is a run folder ({why}): using its newest checkpoint {found[-1].name}")
        return found[-1]
    if (p / CONFIG_FILE).is_file():
        what = f"it has {CONFIG_FILE} but no {WEIGHTS_FILE}"
        if (p / "llm").is_dir():
            what += " (a merged export for transformers, not a project checkpoint)"
    else:
        what = "; ".join(problems) or _what_is_in(p)
    raise CheckpointError(
        p,
        "not a checkpoint folder (config.json + model.safetensors) nor a run folder (a best/last "
        f"pointer or epoch_K/step_N checkpoints): {what}",
    )


def load_pretrained(
    model_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    quantization: str | None = None,
) -> EmotionLlama:
    """Build the model a checkpoint describes and load its weights strictly. ``model_dir``: a
    checkpoint folder, a run folder or a pointer file (:func:`resolve_checkpoint`).
    ``quantization`` (``8bit``/``4bit``): the LLM's linear layers in bitsandbytes, quantized on
    ``device`` itself (:mod:`emotion_llama.model.quantize`); ``fp8``: loaded in ``dtype``, then LoRA
    merged and the LLM's linear layers in FP8 on ``device`` (:mod:`emotion_llama.model.fp8`,
    inference only)."""
    root = resolve_checkpoint(model_dir)
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
    fp8 = check_quantization(quantization) == "fp8"
    if fp8:
        check_fp8_device(device, dtype)  # before any loading
        quantization = None
    try:
        if quantization is not None:  # bitsandbytes quantizes on the device the weights move to
            model = build_model(
                config, dtype=dtype, frozen_state=frozen, device=device, quantization=quantization
            )
        else:
            model = build_model(config, dtype=dtype, frozen_state=frozen)
    except RuntimeError as exc:
        raise CheckpointError(root / FROZEN_FILE, f"does not fit the config: {exc}") from None
    load_trainable(model, state, root / WEIGHTS_FILE)
    model = model.to(device)
    if fp8:
        to_fp8(model)
    return model


#: ``repoint`` options -> the config fields they set.
REPOINT_FIELDS = {
    "llm": ("llm", "name_or_path"),
    "tokenizer": ("llm", "tokenizer"),
    "vision": ("vision", "weights"),
    "local_encoder": ("perception", "local_encoder"),
    "temporal_encoder": ("perception", "temporal_encoder"),
    "audio_encoder": ("perception", "audio_encoder"),
}


def repoint(model_dir: str | Path, **targets: str | None) -> list[tuple[str, str | None, str]]:
    """Point a checkpoint's weight sources elsewhere (a checkpoint copied to another machine, a
    LLaMA folder that moved): ``targets`` are :data:`REPOINT_FIELDS` names -> a local path, hub id
    or source name. Rewrites ``config.json`` (paths relative to the folder, as every checkpoint
    writes them) and returns ``(field, before, after)`` for each change. The weights are not
    touched, and the new sources are read only when the checkpoint is loaded."""
    root = resolve_checkpoint(model_dir)
    config = EmotionLlamaConfig.from_json(root / CONFIG_FILE)
    changes: list[tuple[str, str | None, str]] = []
    for option, value in targets.items():
        if value is None:
            continue
        if option not in REPOINT_FIELDS:
            raise ValueError(f"unknown field {option!r}; choose from {', '.join(REPOINT_FIELDS)}")
        part, name = REPOINT_FIELDS[option]
        section = getattr(config, part)
        before = getattr(section, name)
        if Path(value).expanduser().exists():
            value = str(Path(value).expanduser().resolve())
        config = replace(config, **{part: replace(section, **{name: value})})
        changes.append((f"{part}.{name}", before, value))
    config.validate(root / CONFIG_FILE)
    config.to_json(root / CONFIG_FILE)
    return changes


# -- the authors' checkpoints --------------------------------------------------------------------
def convert_authors_checkpoint(
    pth: str | Path, config: EmotionLlamaConfig, out_dir: str | Path
) -> tuple[Path, list[str]]:
    """An authors' ``.pth`` -> a project checkpoint folder. Needs no base-model weights: only the
    trainable part is mapped. Returns the folder and the unexpected keys that were skipped."""
    # the expected key table needs the LLM's sizes: read them from the named LLM when left open
    config = resolve_llm_sizes(config.validate())
    obj = read_torch_file(pth)
    state, unexpected = convert_authors_state(authors_state_of(obj, pth), config, pth)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(state, out / WEIGHTS_FILE, {"format": "emotion-llama", **_provenance(obj, Path(pth))})
    config.to_json(out / CONFIG_FILE)
    return out, unexpected


# -- merged export ------------------------------------------------------------------------------
def export_merged(model_dir: str | Path, out_dir: str | Path, *, adapter: bool = False) -> Path:
    """A checkpoint (folder, run folder or pointer) -> ``out/llm`` (a plain Hugging Face model
    with LoRA merged, loadable by ``transformers`` alone, with its tokenizer),
    ``out/projections.safetensors`` and ``out/config.json``; ``out/global_encoder.safetensors``
    too when the ViT has no source. ``adapter``: also ``out/adapter``, the LoRA as a PEFT adapter
    folder for servers that apply it to the base LLM at run time (``vllm serve BASE --enable-lora``),
    and ``out/base-llm`` when the base LLM has no source of its own (random weights)."""
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
    if adapter:
        info["merged"].update(_export_adapter(model, base, out))
    (out / "config.json").write_text(json.dumps(portable_paths(info, out), indent=2) + "\n")
    return out


def _export_adapter(model: EmotionLlama, base: dict[str, torch.Tensor], out: Path) -> dict[str, Any]:
    """``out/adapter`` (PEFT's adapter_config.json + adapter_model.safetensors) and, for a base
    without a source, ``out/base-llm``; returns what ``config.json`` records of them."""
    from transformers import AutoModelForCausalLM

    from emotion_llama.model.tokenizer import load_tokenizer

    model.llm.save_pretrained(out / "adapter")
    source = model.config.llm.name_or_path
    if source is None:
        base_config = copy.deepcopy(model.llm.get_base_model().config)
        plain = AutoModelForCausalLM.from_config(base_config, dtype=next(model.llm.parameters()).dtype)
        plain.load_state_dict(base, strict=True)
        plain.save_pretrained(out / "base-llm")
        load_tokenizer(model.config).save_pretrained(out / "base-llm")
    return {"adapter": "adapter", "base_llm": source or "base-llm", "lora_rank": model.config.lora.r}
