"""Training recipes: one YAML file = model, data, tasks, splits, loop settings and schedule.

A recipe file looks like this (every key optional; the defaults are SPEC 4's stage 1)::

    model: paper              # a preset name or a config file (JSON, or YAML with ``preset:``)
    init_from: null           # or a project checkpoint folder / a run folder (its ``last``)
    data: data/merr           # the training data: a path in ``data_format``
    data_format: folder       # folder | jsonl | manifest | mer2023 | mer2024 | pseudo | dfew (formats.py)
    fold: null                # DFEW: the fold 1-5
    features: null            # the feature store when it is not beside the labels
    min_confidence: null      # pseudo: drop clips whose pseudo label is less sure
    extra_data: []            # more sources mixed into training: [{format: pseudo, path: ...}, ...]
    tasks: [emotion, reason]
    split: {train: train, val: val}   # names in the folder's split.json; null = all / no val
    out_dir: runs/stage1
    train: {epochs: 30, iters_per_epoch: 1000, batch_size: 1, grad_accum: 1, precision: fp32,
            seed: 42, weight_decay: 0.05, log_every: 50, device: cpu, num_workers: 0,
            save_every: null, keep_last: 2, log_with: tensorboard, gradient_checkpointing: false,
            compile: false, cache_vit: false, fsdp: false, deepspeed: null,
            eval_metrics: false, eval_max_clips: 64}
    schedule: {kind: warmup_cosine, init_lr: 1.0e-5, min_lr: 1.0e-6, warmup_lr: 1.0e-6,
               warmup_steps: 1000, total_steps: null, per_epoch: true}
    stage: sft                # sft (stages 1-2) | grpo (stage 3, with the two sections below)
    grpo: {group_size: 8, beta: 0.04, clip_eps: 0.2, clip_eps_high: null, iterations: 1,
           max_new_tokens: 64, temperature: 1.0, top_p: 1.0, answer_format: plain,
           max_think_words: null, parser: robust, labels: mer6, task: emotion, instruction: null,
           layout: null, loss_norm: sequence, scale_rewards: true, wheels: null, clues: null}
    rewards: {accuracy: 1.0, format: 0.5, ov: 0.0, faithful: 0.0}

``train.batch_size`` is per process: under ``accelerate launch``/``torchrun`` with W processes a
micro-batch holds ``batch_size * W`` items. ``train.save_every`` (steps) adds ``step_N``
checkpoints (the newest ``keep_last`` kept) for mid-epoch resume; ``train.log_with`` is
``tensorboard`` (``OUT/logs``), ``wandb`` (when installed) or ``none``.

``schedule.total_steps: null`` means ``train.epochs * train.iters_per_epoch``; ``per_epoch``
steps the cosine once per epoch as the authors' code does (``false``: per iteration).
``stage: grpo`` runs :func:`emotion_llama.train.grpo_loop.train_grpo` on the emotion-labelled
clips of ``data`` instead of the supervised loop (``tasks`` is then unused: the prompt's task is
``grpo.task``); ``grpo.*`` and ``rewards.*`` keys are refused in a recipe of another stage.
Relative paths are taken from the current directory. :func:`load_recipe` applies ``key=value``
overrides with dotted keys (``train.epochs=2 schedule.init_lr=1e-4 data=DIR``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.files import read_yaml
from emotion_llama.train.checkpointing import (
    BEST_FILE,
    LAST_FILE,
    TRAIN_CLIPS_FILE,
    read_pointer,
    read_train_clips,
)
from emotion_llama.train.config import GrpoConfig, RewardWeights, TrainConfig
from emotion_llama.train.schedule import Schedule


class RecipeError(EmotionLlamaError, ValueError):
    """A recipe file or an override is not usable."""


@dataclass
class Recipe:
    """A resolved recipe: what :func:`run_recipe` needs.

    Its fields are the recipe's top-level keys (``train_split``/``val_split`` are
    ``split.train``/``split.val``); ``train`` holds ``out_dir`` and the ``train:`` and ``schedule:``
    sections (:data:`KEYS`)."""

    model: str = "paper"
    init_from: str | None = None
    data: str = ""
    data_format: str = "folder"
    fold: int | None = None
    features: str | None = None
    min_confidence: float | None = None
    #: More training sources mixed in (``{format, path, ...}`` as :class:`DataSpec`), e.g. stage 1's
    #: pseudo-label list beside MERR coarse; the validation split comes from ``data`` only.
    extra_data: tuple[dict[str, Any], ...] = ()
    tasks: tuple[str, ...] = ("emotion", "reason")
    train_split: str | None = field(default="train", metadata={"key": "split.train"})
    val_split: str | None = field(default="val", metadata={"key": "split.val"})
    train: TrainConfig = field(default_factory=TrainConfig)
    #: ``sft`` (stages 1 and 2) or ``grpo`` (stage 3: ``grpo`` and its ``rewards``).
    stage: str = "sft"
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    source: str = field(default="<defaults>", metadata={"key": None})


@dataclass(frozen=True)
class _Key:
    """One recipe key: its kind (str, int, float, bool, list or specs; ``?`` when it may be null),
    its default, and the field it fills (``owner`` is recipe, train or schedule; ``field`` is
    ``None`` for a key that is no field of its own)."""

    kind: str
    default: Any
    owner: str
    field: str | None


def _kind(hint: Any) -> str:
    """The recipe kind of a field's type: ``str | None`` -> ``str?``, ``tuple[str, ...]`` ->
    ``list``, ``tuple[dict, ...]`` -> ``specs``; literals and paths are strings."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) in (Union, UnionType):
        base = "str" if all(a in (str, Path) for a in args) else _kind(args[0])
        return base + "?" if len(args) < len(get_args(hint)) else base
    if get_origin(hint) is Literal or hint in (str, Path):
        return "str"
    if get_origin(hint) is tuple:
        return "specs" if get_origin(args[0]) is dict else "list"
    for kind in (bool, int, float):
        if hint is kind:
            return kind.__name__
    raise TypeError(f"no recipe kind for {hint!r}")


def _field_keys(cls: type, defaults: Any, owner: str, prefix: str, skip: tuple[str, ...]) -> dict[str, _Key]:
    hints = get_type_hints(cls)
    return {
        prefix + f.name: _Key(_kind(hints[f.name]), getattr(defaults, f.name), owner, f.name)
        for f in fields(cls)
        if f.name not in skip
    }


def _key_table() -> dict[str, _Key]:
    """Every key a recipe may set (dotted), from the fields of :class:`Recipe`, then of its
    ``train`` (``out_dir``, ``train.*``) and of the train config's ``schedule`` (``schedule.*``).

    Not keys: ``Recipe.source``; ``TrainConfig.betas`` (recipes keep the default) and its
    ``schedule`` (a section); ``GrpoConfig.rewards`` (the ``rewards.*`` section). ``out_dir`` is a
    top-level key. ``schedule.total_steps`` may be null
    (then ``train.epochs * train.iters_per_epoch``), and ``schedule.per_epoch`` stands for
    Schedule's ``iters_per_epoch`` (true: ``train.iters_per_epoch``; false: ``None``).
    """
    recipe = Recipe()
    hints = get_type_hints(Recipe)
    keys: dict[str, _Key] = {}
    for f in fields(Recipe):
        if f.name == "train":
            train = _field_keys(TrainConfig, recipe.train, "train", "train.", skip=("schedule", "betas"))
            keys["out_dir"] = train.pop("train.out_dir")
            keys.update(train)
            schedule = _field_keys(
                Schedule, recipe.train.schedule, "schedule", "schedule.", skip=("iters_per_epoch",)
            )
            schedule["schedule.total_steps"] = _Key("int?", None, "schedule", "total_steps")
            schedule["schedule.per_epoch"] = _Key("bool", True, "schedule", None)
            keys.update(schedule)
        elif f.name == "grpo":
            keys.update(_field_keys(GrpoConfig, recipe.grpo, "grpo", "grpo.", skip=("rewards",)))
            keys.update(_field_keys(RewardWeights, recipe.grpo.rewards, "rewards", "rewards.", skip=()))
        elif f.metadata.get("key", f.name) is not None:
            keys[f.metadata.get("key", f.name)] = _Key(
                _kind(hints[f.name]), getattr(recipe, f.name), "recipe", f.name
            )
    return keys


_KEYS = _key_table()
#: What ``stage:`` may say.
STAGES: tuple[str, ...] = ("sft", "grpo")
#: Every key a recipe may set (dotted), with its kind: str, str?, int, int?, float, bool, list, specs.
KEYS: dict[str, str] = {k: key.kind for k, key in _KEYS.items()}
SECTIONS = tuple(dict.fromkeys(k.partition(".")[0] for k in KEYS if "." in k))


def _defaults() -> dict[str, Any]:
    return {k: key.default for k, key in _KEYS.items()}


def _section(values: dict[str, Any], owner: str) -> dict[str, Any]:
    """The values of ``owner``'s fields (lists as tuples), by field name."""
    return {
        key.field: tuple(values[k]) if key.kind in ("list", "specs") else values[k]
        for k, key in _KEYS.items()
        if key.owner == owner and key.field is not None
    }


def _coerce(key: str, value: Any, where: str) -> Any:
    kind = KEYS[key]
    if value is None:
        if kind.endswith("?"):
            return None
        raise RecipeError(f"{where}: {key} must not be null")
    base = kind.rstrip("?")
    if base == "specs":
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, dict) for v in items):
            raise RecipeError(f"{where}: {key} must be a list of {{format, path, ...}} mappings")
        return [dict(v) for v in items]
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
    path = Path(path)
    data = read_yaml(path, error=RecipeError)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level")
    flat = _flatten(data, path)
    _check_known(list(flat), str(path))
    values = _defaults()
    given = set(flat)
    for key, value in flat.items():
        values[key] = _coerce(key, value, str(path))
    for text in overrides or []:
        key, value = _parse_override(text, path)
        values[key] = _coerce(key, value, f"override {text!r}")
        given.add(key)
    if values["stage"] not in STAGES:
        raise RecipeError(f"{path}: stage must be one of {', '.join(STAGES)}, not {values['stage']!r}")
    stray = sorted(k for k in given if k.startswith(("grpo.", "rewards.")))
    if stray and values["stage"] != "grpo":
        raise RecipeError(
            f"{path}: {', '.join(stray)}: settings of stage grpo, but the recipe's stage is "
            f"{values['stage']} (set stage: grpo)"
        )
    return _build(values, path)


def _build(v: dict[str, Any], path: Path) -> Recipe:
    epochs, iters = v["train.epochs"], v["train.iters_per_epoch"]
    schedule = _section(v, "schedule")
    schedule["total_steps"] = schedule["total_steps"] or max(epochs * iters, 1)
    try:
        cfg = TrainConfig(
            schedule=Schedule(**schedule, iters_per_epoch=iters if v["schedule.per_epoch"] else None),
            **_section(v, "train"),
        )
    except EmotionLlamaError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    grpo = GrpoConfig(**_section(v, "grpo"), rewards=RewardWeights(**_section(v, "rewards")))
    try:
        cfg.validate()
        if v["stage"] == "grpo":
            grpo.validate()
    except EmotionLlamaError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    if not v["data"]:
        raise RecipeError(f"{path}: no data folder (set data: or pass data=DIR)")
    return Recipe(**_section(v, "recipe"), train=cfg, grpo=grpo, source=str(path))


def resolve_checkpoint(path: str | Path, *, quiet: bool = False) -> Path:
    """``init_from``'s checkpoint folder: a checkpoint folder, a pointer file, or a run folder's
    ``last`` (else ``best``, else its newest checkpoint), as
    :func:`emotion_llama.model.checkpoint.resolve_checkpoint` finds it."""
    from emotion_llama.model.checkpoint import resolve_checkpoint as resolve

    try:
        return resolve(path, prefer=(LAST_FILE, BEST_FILE), quiet=quiet)
    except EmotionLlamaError as exc:
        raise RecipeError(f"init_from {str(path)!r}: {exc}") from None


def build_recipe_model(recipe: Recipe) -> tuple[Any, Any]:
    """The model (built from the config, or loaded from ``init_from``) and its processor."""
    from emotion_llama.config import load_config
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import load_pretrained
    from emotion_llama.model.processor import EmotionLlamaProcessor
    from emotion_llama.model.tokenizer import load_tokenizer

    # QLoRA: the base is quantized on the training device itself (bitsandbytes quantizes when
    # its weights move there; moving a quantized model again is not supported).
    quantization = recipe.train.quantization
    device = recipe.train.device if quantization else "cpu"
    if recipe.init_from:
        model = load_pretrained(
            resolve_checkpoint(recipe.init_from), device=device, quantization=quantization
        )
        config = model.config
    else:
        config = load_config(recipe.model)
        model = build_model(config, device=device, quantization=quantization)
    return model, EmotionLlamaProcessor(load_tokenizer(config), config)


def open_recipe_data(
    recipe: Recipe, processor: Any, *, tasks: tuple[str, ...] | None = None
) -> tuple[Any, Any]:
    """The training set (``data`` and ``extra_data``) and the validation set (``split.val`` of
    ``data``; ``None`` without one) of a recipe; ``tasks`` replaces the recipe's for the formats
    that have several."""
    from emotion_llama.train.formats import EMOTION_ONLY, FORMATS, DataSpec, open_training_mix

    if recipe.data_format not in FORMATS:
        raise RecipeError(
            f"{recipe.source}: data_format {recipe.data_format!r} is not one of {', '.join(FORMATS)}"
        )
    if recipe.data_format == "dfew" and recipe.val_split == "test":
        raise RecipeError(
            f"{recipe.source}: DFEW's test split cannot be the validation split (best-checkpoint "
            "selection never sees the test set); set split.val: null"
        )
    seed = recipe.train.seed

    def main_spec(split: str | None) -> DataSpec:
        fmt = recipe.data_format
        return DataSpec(
            fmt,
            recipe.data,
            split=split,
            # emotion-only formats have one task; the recipe's list is for the others
            tasks=None if fmt in EMOTION_ONLY else (tasks or recipe.tasks),
            fold=recipe.fold,
            features=recipe.features,
            min_confidence=recipe.min_confidence,
        )

    try:
        extra = [DataSpec.from_mapping(d) for d in recipe.extra_data]
        if tasks is not None:
            extra = [replace(e, tasks=None if e.format in EMOTION_ONLY else tasks) for e in extra]
        splittable = recipe.data_format not in ("pseudo", "jsonl")  # a manifest has its split column
        train_set = open_training_mix(
            [main_spec(recipe.train_split if splittable else None), *extra], processor, seed=seed
        )
        val_set = None
        if recipe.val_split and splittable:
            val_set = _optional_val(
                lambda: open_training_mix([main_spec(recipe.val_split)], processor, seed=seed + 1)
            )
    except RecipeError:
        raise
    except EmotionLlamaError as exc:
        raise RecipeError(f"{recipe.source}: {exc}") from None
    return train_set, val_set


def inherited_clips(recipe: Recipe) -> set[str]:
    """The clips the start point (``init_from``) trained on: they count as this run's too."""
    if not recipe.init_from:
        return set()
    start = resolve_checkpoint(recipe.init_from, quiet=True)
    return read_train_clips(start / TRAIN_CLIPS_FILE) | read_train_clips(start.parent / TRAIN_CLIPS_FILE)


def with_run_pointers(summary: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """The loop's summary plus ``out_dir``, ``last`` and ``best`` (folders, or ``None``)."""
    out = Path(out_dir)
    last = read_pointer(out)
    best = read_pointer(out, BEST_FILE)
    summary["out_dir"] = str(out)
    summary["last"] = str(out / str(last["dir"])) if last else None
    summary["best"] = str(out / str(best["dir"])) if best else None
    return summary


def run_recipe(recipe: Recipe) -> dict[str, Any]:
    """Build or load the model, read the datasets, train (resuming from ``out_dir/last`` when
    present) and return the loop's summary plus ``out_dir``, ``last`` and ``best``. A recipe of
    ``stage: grpo`` runs :func:`run_grpo_recipe`."""
    if recipe.stage == "grpo":
        return run_grpo_recipe(recipe)
    from emotion_llama.train.loop import train

    model, processor = build_recipe_model(recipe)
    train_set, val_set = open_recipe_data(recipe, processor)
    inherited = inherited_clips(recipe)
    summary = train(model, processor, train_set, recipe.train, val_dataset=val_set, also_trained_on=inherited)
    return with_run_pointers(summary, recipe.train.out_dir)


def _grpo_clues(recipe: Recipe) -> dict[str, Any] | None:
    """The clue records of the faithfulness reward (``rewards.faithful`` > 0): ``grpo.clues``, else
    the data folder's ``merr_fine.json`` or ``merr_coarse.json``."""
    from emotion_llama.train.grpo_data import default_clues, load_clues

    gcfg = recipe.grpo
    if gcfg.rewards.faithful <= 0:
        return None
    path = Path(gcfg.clues) if gcfg.clues else default_clues(recipe.data)
    if path is None:
        raise RecipeError(
            f"{recipe.source}: rewards.faithful > 0 needs the clips' clue records: set grpo.clues "
            "(a MERR JSON such as merr_fine.json, or a JSONL of clue records)"
        )
    try:
        return dict(load_clues(path))
    except EmotionLlamaError as exc:
        raise RecipeError(f"{recipe.source}: grpo.clues: {exc}") from None


def run_grpo_recipe(recipe: Recipe) -> dict[str, Any]:
    """Stage 3: the model from ``init_from`` (normally the stage-2 run folder, its ``last``), the
    prompts from the emotion-labelled clips of ``data`` (``split.train``; ``split.val`` for the
    per-epoch greedy validation with ``train.eval_metrics``), the emotion-wheel tables of
    ``grpo.wheels`` (``rewards.ov`` > 0) and the clue records of :func:`_grpo_clues`, then
    :func:`~emotion_llama.train.grpo_loop.train_grpo` (resuming from ``out_dir/last``). Returns
    its summary plus ``out_dir``, ``last`` and ``best``."""
    from emotion_llama.data.samples import TrainDataError
    from emotion_llama.train.grpo_data import PromptSet, describe
    from emotion_llama.train.grpo_loop import train_grpo

    gcfg = recipe.grpo
    if not recipe.init_from:
        print("note: stage grpo without init_from starts from the preset's weights, not a stage-2 run")
    wheels = None
    if gcfg.rewards.ov > 0:
        from emotion_llama.evaluate.openvocab import EmotionWheels

        try:
            wheels = EmotionWheels.load(str(gcfg.wheels))
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{recipe.source}: grpo.wheels: {exc}") from None
    clues = _grpo_clues(recipe)
    model, processor = build_recipe_model(recipe)
    train_set, val_set = open_recipe_data(recipe, processor, tasks=("emotion",))
    try:
        prompts = PromptSet(train_set, gcfg, clues=clues)
        val_prompts = PromptSet(val_set, gcfg, clues=clues) if val_set is not None else None
    except TrainDataError as exc:
        raise RecipeError(f"{recipe.source}: {exc}") from None
    print(f"stage grpo: {describe(prompts)}", flush=True)
    summary = train_grpo(
        model,
        processor,
        prompts,
        recipe.train,
        gcfg,
        val_prompts=val_prompts,
        wheels=wheels,
        also_trained_on=inherited_clips(recipe),
    )
    return with_run_pointers(summary, recipe.train.out_dir)


def _optional_val(open_val: Any) -> Any:
    """The validation set, or ``None`` when the split has no clip (a warning, not an error: small
    custom datasets often have none)."""
    from emotion_llama.data.samples import TrainDataError

    try:
        return open_val()
    except TrainDataError as exc:
        if "no training samples" in str(exc) or "no sample" in str(exc):
            print(f"no validation set: {exc}", flush=True)
            return None
        raise
