"""Training recipes: one YAML file = model, data, tasks, splits, loop settings and schedule.

A recipe file looks like this (every key optional; the defaults are SPEC 4's stage 1)::

    model: paper              # a preset name or a config file (JSON, or YAML with ``preset:``)
    init_from: null           # or a project checkpoint folder / a run folder (its ``last``)
    data: data/merr           # a dataset folder in the project's format (SPEC 5)
    tasks: [emotion, reason]
    split: {train: train, val: val}   # names in the folder's split.json; null = all / no val
    out_dir: runs/stage1
    train: {epochs: 30, iters_per_epoch: 1000, batch_size: 1, grad_accum: 1, precision: fp32,
            seed: 42, weight_decay: 0.05, log_every: 50, device: cpu, num_workers: 0}
    schedule: {kind: warmup_cosine, init_lr: 1.0e-5, min_lr: 1.0e-6, warmup_lr: 1.0e-6,
               warmup_steps: 1000, total_steps: null, per_epoch: true}

``schedule.total_steps: null`` means ``train.epochs * train.iters_per_epoch``; ``per_epoch``
steps the cosine once per epoch as the authors' code does (``false``: per iteration).
Relative paths are taken from the current directory. :func:`load_recipe` applies ``key=value``
overrides with dotted keys (``train.epochs=2 schedule.init_lr=1e-4 data=DIR``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.train.loop import TrainConfig, read_pointer
from emotion_llama.train.schedule import Schedule


class RecipeError(EmotionLlamaError, ValueError):
    """A recipe file or an override is not usable."""


#: Every key a recipe may set (dotted), with its kind: str, str?, int, int?, float, bool, list.
KEYS: dict[str, str] = {
    "model": "str",
    "init_from": "str?",
    "data": "str",
    "tasks": "list",
    "split.train": "str?",
    "split.val": "str?",
    "out_dir": "str",
    "train.epochs": "int",
    "train.iters_per_epoch": "int",
    "train.batch_size": "int",
    "train.grad_accum": "int",
    "train.precision": "str",
    "train.seed": "int",
    "train.weight_decay": "float",
    "train.log_every": "int",
    "train.device": "str",
    "train.num_workers": "int",
    "schedule.kind": "str",
    "schedule.init_lr": "float",
    "schedule.min_lr": "float",
    "schedule.warmup_lr": "float",
    "schedule.warmup_steps": "int",
    "schedule.total_steps": "int?",
    "schedule.per_epoch": "bool",
}
SECTIONS = ("split", "train", "schedule")


def _defaults() -> dict[str, Any]:
    s = Schedule.stage1()
    t = TrainConfig()
    return {
        "model": "paper",
        "init_from": None,
        "data": "",
        "tasks": ["emotion", "reason"],
        "split.train": "train",
        "split.val": "val",
        "out_dir": str(t.out_dir),
        "train.epochs": t.epochs,
        "train.iters_per_epoch": t.iters_per_epoch,
        "train.batch_size": t.batch_size,
        "train.grad_accum": t.grad_accum,
        "train.precision": t.precision,
        "train.seed": t.seed,
        "train.weight_decay": t.weight_decay,
        "train.log_every": t.log_every,
        "train.device": t.device,
        "train.num_workers": t.num_workers,
        "schedule.kind": s.kind,
        "schedule.init_lr": s.init_lr,
        "schedule.min_lr": s.min_lr,
        "schedule.warmup_lr": s.warmup_lr,
        "schedule.warmup_steps": s.warmup_steps,
        "schedule.total_steps": None,
        "schedule.per_epoch": True,
    }


@dataclass
class Recipe:
    """A resolved recipe: what :func:`run_recipe` needs."""

    model: str = "paper"
    init_from: str | None = None
    data: str = ""
    tasks: tuple[str, ...] = ("emotion", "reason")
    train_split: str | None = "train"
    val_split: str | None = "val"
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = "<defaults>"


def _coerce(key: str, value: Any, where: str) -> Any:
    kind = KEYS[key]
    if value is None:
        if kind.endswith("?"):
            return None
        raise RecipeError(f"{where}: {key} must not be null")
    base = kind.rstrip("?")
    try:
        if base == "str":
            if isinstance(value, (dict, list)):
                raise ValueError("expected a string")
            return str(value)
        if base == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if base == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
            raise ValueError("expected true or false")
        # list of strings: a YAML list or "a,b"
        items = value if isinstance(value, list) else str(value).split(",")
        out = [str(v).strip() for v in items if str(v).strip()]
        if not out:
            raise ValueError("expected a non-empty list")
        return out
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{where}: {key}={value!r}: {exc}") from None


def _flatten(data: dict[str, Any], path: Path) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise RecipeError(f"{path}: {key} must be a mapping")
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    return flat


def _check_known(keys: list[str], where: str) -> None:
    unknown = [k for k in keys if k not in KEYS]
    if unknown:
        raise RecipeError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; known: {', '.join(KEYS)}"
        )


def _parse_override(text: str, path: Path) -> tuple[str, Any]:
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"override {text!r} for {path}: expected key=value")
    _check_known([key], f"override {text!r} for {path}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads "1e-4" as a string; the coercion below turns it into a number.
    return key, value


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML and apply ``key=value`` overrides (dotted keys)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level")
    flat = _flatten(data, path)
    _check_known(list(flat), str(path))
    values = _defaults()
    for key, value in flat.items():
        values[key] = _coerce(key, value, str(path))
    for text in overrides or []:
        key, value = _parse_override(text, path)
        values[key] = _coerce(key, value, f"override {text!r}")
    return _build(values, path)


def _build(v: dict[str, Any], path: Path) -> Recipe:
    epochs, iters = v["train.epochs"], v["train.iters_per_epoch"]
    try:
        schedule = Schedule(
            kind=v["schedule.kind"],
            init_lr=v["schedule.init_lr"],
            min_lr=v["schedule.min_lr"],
            warmup_lr=v["schedule.warmup_lr"],
            warmup_steps=v["schedule.warmup_steps"],
            total_steps=v["schedule.total_steps"] or max(epochs * iters, 1),
            iters_per_epoch=iters if v["schedule.per_epoch"] else None,
        )
    except EmotionLlamaError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    cfg = TrainConfig(
        schedule=schedule,
        weight_decay=v["train.weight_decay"],
        epochs=epochs,
        iters_per_epoch=iters,
        batch_size=v["train.batch_size"],
        grad_accum=v["train.grad_accum"],
        seed=v["train.seed"],
        precision=v["train.precision"],
        out_dir=v["out_dir"],
        log_every=v["train.log_every"],
        num_workers=v["train.num_workers"],
        device=v["train.device"],
    )
    try:
        cfg.validate()
    except EmotionLlamaError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    if not v["data"]:
        raise RecipeError(f"{path}: no data folder (set data: or pass data=DIR)")
    return Recipe(
        model=v["model"],
        init_from=v["init_from"],
        data=v["data"],
        tasks=tuple(v["tasks"]),
        train_split=v["split.train"],
        val_split=v["split.val"],
        train=cfg,
        source=str(path),
    )


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder (``config.json`` inside), or the epoch folder a run folder's ``last``
    pointer (or a ``last``/``best`` pointer file) names."""
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file():
        return p
    if p.is_file():
        pointer = read_pointer(p.parent, p.name)
        base = p.parent
    else:
        pointer = read_pointer(p) if p.is_dir() else None
        base = p
    if pointer is None or "dir" not in pointer:
        raise RecipeError(
            f"init_from {str(path)!r}: neither a checkpoint folder nor a run with a 'last' pointer"
        )
    return base / str(pointer["dir"])


def build_recipe_model(recipe: Recipe) -> tuple[Any, Any]:
    """The model (built from the config, or loaded from ``init_from``) and its processor."""
    from emotion_llama.config import load_config
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import load_pretrained
    from emotion_llama.model.processor import EmotionLlamaProcessor
    from emotion_llama.model.tokenizer import load_tokenizer

    if recipe.init_from:
        model = load_pretrained(resolve_checkpoint(recipe.init_from))
        config = model.config
    else:
        config = load_config(recipe.model)
        model = build_model(config)
    return model, EmotionLlamaProcessor(load_tokenizer(config), config)


def run_recipe(recipe: Recipe) -> dict[str, Any]:
    """Build or load the model, read the datasets, train (resuming from ``out_dir/last`` when
    present) and return the loop's summary plus ``out_dir``, ``last`` and ``best``."""
    from emotion_llama.train.data import TrainDataset, read_training_folder
    from emotion_llama.train.loop import BEST_FILE, train

    model, processor = build_recipe_model(recipe)
    config = model.config
    seed = recipe.train.seed
    train_set = TrainDataset(
        read_training_folder(recipe.data, config, tasks=recipe.tasks, split=recipe.train_split),
        processor,
        seed=seed,
    )
    val_set = None
    if recipe.val_split:
        val_samples = read_training_folder(recipe.data, config, tasks=recipe.tasks, split=recipe.val_split)
        if val_samples:
            val_set = TrainDataset(val_samples, processor, seed=seed + 1)
    summary = train(model, processor, train_set, recipe.train, val_dataset=val_set)
    out = Path(recipe.train.out_dir)
    last = read_pointer(out)
    best = read_pointer(out, BEST_FILE)
    summary["out_dir"] = str(out)
    summary["last"] = str(out / str(last["dir"])) if last else None
    summary["best"] = str(out / str(best["dir"])) if best else None
    return summary
