"""The training loop for the recipe of SPEC 4, on Hugging Face ``accelerate``.

The same code runs in one process and under ``accelerate launch`` / ``torchrun`` (DDP; FSDP and
DeepSpeed ZeRO-2/3 through an accelerate config file, see ``configs/accelerate/``).

* AdamW (betas, weight decay on matrices only via :func:`param_groups`), the lr of
  :class:`Schedule` set on every optimiser step (``step`` = global optimiser step from 0).
* ``accelerate.Accelerator`` places the model, wraps it (DDP...), runs autocast (``bf16``;
  ``fp16`` with a grad scaler, GPU only; ``fp32``), scales and accumulates gradients
  (``accelerator.accumulate`` / ``accelerator.backward``) and reduces the logged loss.
* "Epochs" of ``iters_per_epoch`` optimiser steps; each step consumes ``grad_accum`` global
  micro-batches of ``batch_size * W`` items (``W`` processes) drawn from one infinite stream of
  shuffled passes. Rank ``r`` takes stream positions ``[r * B, (r + 1) * B)`` of each global
  micro-batch, so one process with ``batch_size = B * W`` and ``W`` processes with ``batch_size
  = B`` see the same items per step. The loss is the token-weighted mean over the global
  micro-batch (each rank's mean is weighted by its share of answer tokens before the gradient
  average), so both set-ups follow the same gradients up to floating-point noise.
* Checkpoints, each written under a temporary name and renamed, then ``out_dir/last`` (JSON)
  pointed at it: ``epoch_{k}/`` after each epoch, and ``step_{N}/`` every ``save_every`` steps
  (only the newest ``keep_last`` step checkpoints are kept; epoch checkpoints stay). A checkpoint
  holds the trainable weights (``save_pretrained``) and ``trainer_state.pt`` (optimizer, scaler,
  step, epoch, stream position, partial epoch loss, RNG states of every rank). With a validation
  set, ``out_dir/best`` (JSON) names the epoch with the lowest validation loss.
* Resume (from ``last``) restores all of that and continues, mid-epoch included, so an
  interrupted run ends with the weights of an uninterrupted one.
* Only the main process writes checkpoints, pointers and logs: ``out_dir/losses.jsonl`` (one
  line per optimiser step: ``step`` (0-based), ``epoch``, ``loss`` (global mean), ``lr``) and
  TensorBoard (or W&B) scalars under ``out_dir/logs``: ``train/loss``, ``train/lr``,
  ``train/tokens_per_s``, ``train/samples_per_s`` at the step's 0-based index, ``val/loss`` (and
  with ``eval_metrics`` ``val/accuracy``, ``val/weighted_f1``) at the epoch's last step.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from emotion_llama.encoders.store import atomic_write_bytes
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.checkpoint import WEIGHTS_FILE, load_trainable, read_safetensors, save_pretrained
from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.train.data import TrainDataset
from emotion_llama.train.schedule import Schedule, param_groups

if TYPE_CHECKING:
    from accelerate import Accelerator

    from emotion_llama.train.vit_cache import CachedVisionDataset

Precision = Literal["fp32", "bf16", "fp16"]
LogWith = Literal["tensorboard", "wandb", "none"]
LOG_WITH: tuple[str, ...] = ("tensorboard", "wandb", "none")
STATE_FILE = "trainer_state.pt"
LAST_FILE = "last"
BEST_FILE = "best"
LOSSES_FILE = "losses.jsonl"
LOGS_DIR = "logs"
VIT_CACHE_DIR = "vit_cache"
#: Settings that fix what the stream position means; a resume with other values is refused.
_RESUME_KEYS = ("batch_size", "grad_accum", "iters_per_epoch", "seed")
_MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


class TrainError(EmotionLlamaError):
    """Training cannot start or resume as configured."""


@dataclass
class TrainConfig:
    schedule: Schedule = field(default_factory=Schedule.stage1)
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = 30
    iters_per_epoch: int = 1000
    #: Items per process and micro-batch (the global micro-batch is ``batch_size * processes``).
    batch_size: int = 1
    grad_accum: int = 1
    seed: int = 42
    precision: Precision = "fp32"
    out_dir: str | Path = "runs/train"
    log_every: int = 50
    num_workers: int = 0
    device: str = "cpu"
    #: Also write ``step_{N}`` checkpoints every this many optimiser steps (``None``: per epoch only).
    save_every: int | None = None
    #: How many ``step_{N}`` checkpoints to keep (the newest); epoch checkpoints are all kept.
    keep_last: int = 2
    log_with: LogWith = "tensorboard"
    #: Recompute the LLM's activations in the backward pass (less memory, ~30% more time).
    gradient_checkpointing: bool = False
    #: Run the frozen ViT once per clip before training and train on its cached output.
    cache_vit: bool = False
    #: After each validation: label accuracy and weighted F1 of the emotion task (greedy).
    eval_metrics: bool = False
    eval_max_clips: int = 64

    def validate(self) -> TrainConfig:
        for key in ("epochs", "iters_per_epoch", "batch_size", "grad_accum", "log_every", "keep_last"):
            if getattr(self, key) < 1:
                raise TrainError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if self.eval_max_clips < 1:
            raise TrainError(f"train.eval_max_clips must be >= 1, got {self.eval_max_clips}")
        if self.save_every is not None and self.save_every < 1:
            raise TrainError(f"train.save_every must be >= 1 or null, got {self.save_every}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise TrainError(f"train.precision must be fp32, bf16 or fp16, not {self.precision!r}")
        if self.precision == "fp16" and torch.device(self.device).type == "cpu":
            raise TrainError("train.precision fp16 needs a GPU; on CPU use bf16 or fp32")
        if self.log_with not in LOG_WITH:
            raise TrainError(f"train.log_with must be one of {', '.join(LOG_WITH)}, not {self.log_with!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


def _stream(n: int, seed: int, start: int) -> Iterator[tuple[int, int]]:
    pos = start
    while True:
        p, offset = divmod(pos, n)
        perm = np.random.default_rng([seed, p]).permutation(n)
        for i in range(offset, n):
            yield int(perm[i]), pos
            pos += 1


class StreamSampler(Sampler[tuple[int, int]]):
    """Infinite shuffled passes; yields ``(index, draw)`` from stream position ``start`` on.

    Pass ``p`` is a permutation seeded by ``(seed, p)``, so the item at any position is a pure
    function of that position: resuming needs only the count of items consumed, even when
    loader workers prefetched further than the loop consumed.

    With ``world_size`` processes the stream is cut into global micro-batches of
    ``batch_size * world_size`` positions (from ``start``), and ``rank`` gets positions
    ``[rank * batch_size, (rank + 1) * batch_size)`` of each.
    """

    def __init__(
        self, n: int, seed: int, start: int = 0, *, batch_size: int = 1, rank: int = 0, world_size: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise TrainError(f"rank {rank} out of range for {world_size} processes")
        self.n, self.seed, self.start = n, seed, start
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.world_size == 1:
            yield from _stream(self.n, self.seed, self.start)
            return
        for index, pos in _stream(self.n, self.seed, self.start):
            if ((pos - self.start) // self.batch_size) % self.world_size == self.rank:
                yield index, pos


# -- state ---------------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # As a tensor: ``torch.load(weights_only=True)`` refuses numpy arrays.
        "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))


def read_pointer(out_dir: str | Path, which: str = LAST_FILE) -> dict[str, Any] | None:
    """The ``last`` or ``best`` pointer of a run folder, or ``None`` when absent."""
    path = Path(out_dir) / which
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise TrainError(f"{path}: unreadable pointer ({exc})") from None


def read_losses(out_dir: str | Path) -> list[dict[str, Any]]:
    """The per-step records of ``out_dir/losses.jsonl`` (``step``, ``epoch``, ``loss``, ``lr``)."""
    path = Path(out_dir) / LOSSES_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def step_checkpoints(out_dir: str | Path) -> list[Path]:
    """The ``step_{N}`` folders of a run, oldest first."""
    found = []
    for p in Path(out_dir).glob("step_*"):
        suffix = p.name[len("step_") :]
        if p.is_dir() and suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found)]


# -- the engine ----------------------------------------------------------------------------------
def _make_accelerator(cfg: TrainConfig, out: Path) -> Accelerator:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import ProjectConfiguration

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        # Several runs in one process (tests, notebooks) may use other precisions; accelerate
        # keeps one global state and refuses to change it. Outside a process group it is safe to
        # start afresh.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    device = torch.device(cfg.device)
    if device.type == "cuda" and device.index is not None and "LOCAL_RANK" not in os.environ:
        torch.cuda.set_device(device.index)
    log_with = None if cfg.log_with == "none" else cfg.log_with
    if log_with == "wandb":
        from accelerate.utils import is_wandb_available

        if not is_wandb_available():
            raise TrainError("train.log_with is wandb but wandb is not installed (pip install wandb)")
    if log_with == "tensorboard":
        from accelerate.utils import is_tensorboard_available

        if not is_tensorboard_available():
            raise TrainError("train.log_with is tensorboard but tensorboard is not installed")
    return Accelerator(
        mixed_precision=_MIXED[cfg.precision],
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=device.type == "cpu",
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out)),
    )


def _engine(accelerator: Accelerator) -> str:
    """``plain`` (one process or DDP), ``fsdp``, ``deepspeed`` or ``deepspeed3``."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return "fsdp"
    if kind == DistributedType.DEEPSPEED:
        plugin = accelerator.state.deepspeed_plugin
        stage = int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0)) if plugin else 0
        return "deepspeed3" if stage == 3 else "deepspeed"
    return "plain"


def _fill_deepspeed_config(accelerator: Accelerator, cfg: TrainConfig) -> None:
    """DeepSpeed fills its "auto" batch sizes from a prepared DataLoader; this loop shards the
    stream itself, so they are filled from the recipe here (before ``prepare``)."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    filled = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.batch_size * cfg.grad_accum * accelerator.num_processes,
    }
    for key, value in filled.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
        elif int(ds[key]) != value:
            raise TrainError(f"DeepSpeed config sets {key}={ds[key]} but the recipe implies {value}")


def _gather_objects(accelerator: Accelerator, obj: Any) -> list[Any]:
    if accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return list(gather_object([obj]))


def _sharded_trainable_state(model: EmotionLlama, full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from emotion_llama.model.keys import is_trainable_key, to_canonical_key

    return {to_canonical_key(k): v for k, v in full.items() if is_trainable_key(k)}


def _save_checkpoint(
    accelerator: Accelerator,
    engine_model: Any,
    model: EmotionLlama,
    optimizer: Any,
    out: Path,
    name: str,
    state: dict[str, Any],
) -> Path:
    """Write ``out/name`` atomically; every process calls this (collectives inside)."""
    from emotion_llama.model.checkpoint import write_safetensors

    engine = _engine(accelerator)
    final, tmp = out / name, out / f".{name}.tmp"
    main = accelerator.is_main_process
    # Collectives first, on every rank.
    state = {**state, "rng": _gather_objects(accelerator, _rng_state())}
    full = accelerator.get_state_dict(engine_model) if engine in ("fsdp", "deepspeed3") else None
    if main:
        if tmp.exists():
            shutil.rmtree(tmp)
        if full is None:
            save_pretrained(model, tmp)
        else:
            # Parameters are sharded: the gathered full state replaces the module's own.
            tmp.mkdir(parents=True)
            trainable = _sharded_trainable_state(model, full)
            write_safetensors(trainable, tmp / WEIGHTS_FILE, {"format": "emotion-llama"})
            model.config.to_json(tmp / "config.json")
        if engine == "plain":
            state["optimizer"] = optimizer.state_dict()
            state["scaler"] = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        torch.save(state, tmp / STATE_FILE)
    accelerator.wait_for_everyone()
    if engine == "fsdp":
        torch.save(optimizer.state_dict(), tmp / f"optimizer_rank{accelerator.process_index}.pt")
    elif engine.startswith("deepspeed"):
        engine_model.save_checkpoint(str(tmp / "deepspeed"), tag="state", exclude_frozen_parameters=True)
    accelerator.wait_for_everyone()
    if main:
        # The folder appears complete or not at all; a rerun of the same checkpoint replaces it.
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


def _load_engine_state(
    accelerator: Accelerator, engine_model: Any, optimizer: Any, folder: Path, state: dict[str, Any]
) -> None:
    engine = _engine(accelerator)
    if engine == "plain":
        optimizer.load_state_dict(state["optimizer"])
        if accelerator.scaler is not None and state.get("scaler"):
            accelerator.scaler.load_state_dict(state["scaler"])
    elif engine == "fsdp":
        path = folder / f"optimizer_rank{accelerator.process_index}.pt"
        if not path.is_file():
            raise TrainError(f"{path}: missing; an FSDP run resumes only with the same number of processes")
        optimizer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        engine_model.load_checkpoint(
            str(folder / "deepspeed"), tag="state", load_module_strict=False, load_lr_scheduler_states=False
        )


# -- loop helpers --------------------------------------------------------------------------------
def _autocast(cfg: TrainConfig, device: torch.device) -> Any:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _answer_tokens(labels: torch.Tensor) -> int:
    # The tokens the loss averages over: labels after the shift, -100 excluded.
    return int((labels[:, 1:] != -100).sum())


@torch.no_grad()
def validation_loss(
    model: Any,
    dataset: TrainDataset | CachedVisionDataset,
    cfg: TrainConfig,
    device: torch.device | None = None,
    *,
    accelerator: Accelerator | None = None,
) -> float:
    """Mean per-token answer loss over every clip of ``dataset`` with draw 0 (a fixed task and
    instruction per clip, so epochs are compared on the same text).

    With an ``accelerator`` of several processes, rank ``r`` takes clips ``r, r + W, ...``; every
    rank runs the same number of batches (a rank short of clips repeats one with weight 0, as
    sharded engines need every rank in every forward) and the sums are reduced."""
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    if device is None:
        device = accelerator.device if accelerator is not None else torch.device(cfg.device)
    was_training = model.training
    model.eval()
    mine = list(range(rank, len(dataset), world))
    per_rank = math.ceil(len(dataset) / world)
    total, tokens = 0.0, 0
    for start in range(0, per_rank, cfg.batch_size):
        keys = mine[start : start + cfg.batch_size]
        # A rank out of clips still runs a forward (sharded engines need every rank), unweighted.
        batch = _to(dataset.collate([dataset[(k, 0)] for k in keys or [0]]), device)
        # Weighted by answer tokens (minus the shift), so the mean does not depend on batching.
        n = _answer_tokens(batch["labels"]) if keys else 0
        with _autocast(cfg, device):
            loss = model(**batch).loss
        if n:
            total += float(loss) * n
            tokens += n
    if world > 1 and accelerator is not None:
        sums = accelerator.reduce(torch.tensor([total, float(tokens)], dtype=torch.float64, device=device))
        total, tokens = float(sums[0]), int(sums[1])
    model.train(was_training)
    return total / max(tokens, 1)


def emotion_metrics(
    model: EmotionLlama,
    processor: EmotionLlamaProcessor,
    dataset: TrainDataset,
    *,
    max_clips: int = 64,
    batch_size: int = 8,
    max_new_tokens: int = 32,
) -> dict[str, float] | None:
    """Label accuracy and weighted F1 of the emotion task on the first ``max_clips`` clips (in
    name order) that have an emotion label: greedy generation with the task's first instruction,
    answers parsed with ``parse_label_robust`` (falling back on the authors' last-word rule, which
    counts an unparsable answer as ``neutral``). Answers are cut at ``max_new_tokens`` (a label
    answer is a few words; the full evaluation allows 500). ``None`` when no clip has a label."""
    from emotion_llama import metrics
    from emotion_llama.model.generation import ClipInput, Generator
    from emotion_llama.prompts import MER_LABELS, parse_label_robust, parse_last_word

    samples = [s for options in dataset.clips for s in options if s.task == "emotion"][:max_clips]
    if not samples:
        return None
    truth = [s.target.strip().lower() for s in samples]
    labels = tuple(dict.fromkeys([*MER_LABELS, *sorted(set(truth))]))
    was_training = model.training
    gen = Generator(model, processor, task="emotion", max_new_tokens=max_new_tokens)
    answers: list[str] = []
    try:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            clips = []
            for s in chunk:
                frame = s.frame
                if not isinstance(frame, np.ndarray):
                    from emotion_llama.media.frames import read_frame

                    frame = read_frame(frame)
                clips.append(ClipInput(s.subtitle, frame, s.features))
            answers.extend(gen(clips))
    finally:
        model.train(was_training)
    predicted = [parse_label_robust(a, labels) or parse_last_word(a, labels) for a in answers]
    return {
        "accuracy": metrics.accuracy(truth, predicted),
        "weighted_f1": metrics.f1(truth, predicted, labels=labels, average="weighted"),
    }


def _set_gradient_checkpointing(model: EmotionLlama, on: bool) -> None:
    """Activation checkpointing of the LLM's decoder layers (non-reentrant), on or off."""
    llm = model.llm
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x
        if on:
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif gradient_checkpointing_on(model):
            base.activation_checkpointing_disable()
    elif on:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif gradient_checkpointing_on(model):
        base.gradient_checkpointing_disable()


def gradient_checkpointing_on(model: EmotionLlama) -> bool:
    llm = model.llm
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    if hasattr(type(base), "is_activation_checkpointing"):
        return bool(base.is_activation_checkpointing)
    return bool(getattr(base, "is_gradient_checkpointing", False))


class _StepLog:
    """The main process's per-step records: ``losses.jsonl`` and the accelerate trackers."""

    def __init__(
        self, accelerator: Accelerator, out: Path, cfg: TrainConfig, resume_step: int | None
    ) -> None:
        self.accelerator = accelerator
        self.path = out / LOSSES_FILE
        self.main = accelerator.is_main_process
        if self.main:
            # A resumed run drops what the interrupted one logged after its checkpoint.
            kept = [] if resume_step is None else [r for r in read_losses(out) if r["step"] < resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        if cfg.log_with != "none":
            config = {
                k: v
                for k, v in cfg.to_dict().items()
                if isinstance(v, (int, float, str, bool)) and v is not None
            }
            init_kwargs: dict[str, Any] = {}
            if cfg.log_with == "wandb":
                init_kwargs["wandb"] = {"dir": str(out / LOGS_DIR), "name": out.name}
                (out / LOGS_DIR).mkdir(parents=True, exist_ok=True)
            accelerator.init_trackers(LOGS_DIR, config=config, init_kwargs=init_kwargs)

    def step(
        self, step: int, epoch: int, loss: float, lr: float, samples: float, tokens: float, secs: float
    ) -> None:
        if not self.main:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "epoch": epoch, "loss": loss, "lr": lr}) + "\n")
        secs = max(secs, 1e-9)
        self.accelerator.log(
            {
                "train/loss": loss,
                "train/lr": lr,
                "train/tokens_per_s": tokens / secs,
                "train/samples_per_s": samples / secs,
            },
            step=step,
        )

    def values(self, values: dict[str, float], step: int) -> None:
        self.accelerator.log(values, step=step)

    def close(self) -> None:
        for tracker in self.accelerator.trackers:
            tracker.finish()


def _prune_step_checkpoints(out: Path, keep: int) -> None:
    for old in step_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# -- loop ----------------------------------------------------------------------------------------
def train(
    model: EmotionLlama,
    processor: EmotionLlamaProcessor,
    dataset: TrainDataset,
    cfg: TrainConfig,
    *,
    val_dataset: TrainDataset | None = None,
    resume: bool = True,
    stop_after_epoch: int | None = None,
    stop_after_step: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place; see the module docstring. ``stop_after_epoch`` ends the run after
    that epoch's checkpoint, ``stop_after_step`` after that many optimiser steps in total (with
    or without a checkpoint there: an interruption at a known point, for tests and jobs with a
    time budget). Returns ``{"losses", "val_losses", "val_metrics", "best_epoch", "step",
    "epochs_done", "main_process"}``.
    """
    cfg.validate()
    if dataset.processor is not processor:
        raise TrainError("the dataset was built with another processor")
    out = Path(cfg.out_dir)
    accelerator = _make_accelerator(cfg, out)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    device = accelerator.device
    if main:
        out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    engine = _engine(accelerator)
    if cfg.eval_metrics and engine in ("fsdp", "deepspeed3"):
        raise TrainError("train.eval_metrics needs unsharded weights; turn it off under FSDP or ZeRO-3")
    per_step = cfg.batch_size * world * cfg.grad_accum
    history: dict[str, Any] = {
        "losses": [],
        "val_losses": [],
        "val_metrics": [],
        "best_epoch": None,
        "best_val": None,
    }
    step, epoch, position, epoch_loss = 0, 0, 0, 0.0

    last = read_pointer(out) if resume else None
    state: dict[str, Any] | None = None
    folder = out
    if last is not None:
        folder = out / str(last["dir"])
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        saved_cfg = state["config"]
        changed = [k for k in _RESUME_KEYS if saved_cfg.get(k) != getattr(cfg, k)]
        if changed:
            raise TrainError(
                f"{folder}: cannot resume, {', '.join(changed)} differ from the saved run; "
                "use another out_dir or resume=False"
            )
        saved_world = int(state.get("world_size", 1))
        if saved_world != world and engine != "plain":
            raise TrainError(
                f"{folder}: saved by {saved_world} processes; a sharded run resumes with as many"
            )
        load_trainable(model, read_safetensors(folder / WEIGHTS_FILE), folder / WEIGHTS_FILE)
        step, epoch, position = int(state["step"]), int(state["epoch"]), int(state["position"])
        epoch_loss = float(state.get("epoch_loss", 0.0))
        history = {**history, **dict(state["history"])}
        if saved_world != world and main:
            print(f"note: the run was saved by {saved_world} processes and resumes with {world}", flush=True)

    if cfg.gradient_checkpointing:
        _set_gradient_checkpointing(model, True)
    if cfg.cache_vit:
        from emotion_llama.train.vit_cache import CachedVisionDataset, build_vit_cache

        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
        encoder = model.global_encoder.to(device)
        cache, stats = build_vit_cache(
            encoder,
            [d for d in (dataset, val_dataset) if d is not None],
            out / VIT_CACHE_DIR,
            dtype=dtype,
            device=device,
            autocast=lambda: _autocast(cfg, device),
            rank=rank,
            world_size=world,
            show_progress=main,
        )
        accelerator.wait_for_everyone()
        if main:
            print(
                f"ViT cache {cache.folder}: {stats.built} computed, {stats.reused} reused (rank 0)",
                flush=True,
            )
        train_data: Any = CachedVisionDataset(dataset, cache)
        val_data: Any = CachedVisionDataset(val_dataset, cache) if val_dataset is not None else None
    else:
        train_data, val_data = dataset, val_dataset

    optimizer = torch.optim.AdamW(
        param_groups(model.named_parameters(), cfg.weight_decay), lr=cfg.schedule.lr(0), betas=cfg.betas
    )
    _fill_deepspeed_config(accelerator, cfg)
    engine_model, optimizer = accelerator.prepare(model, optimizer)
    if state is not None:
        _load_engine_state(accelerator, engine_model, optimizer, folder, state)
        if main:
            print(f"resumed from {folder} at epoch {epoch}, step {step}", flush=True)
    log = _StepLog(accelerator, out, cfg, step if state is not None else None)

    loader = DataLoader(
        train_data,
        batch_size=cfg.batch_size,
        sampler=StreamSampler(
            len(train_data), cfg.seed, position, batch_size=cfg.batch_size, rank=rank, world_size=world
        ),
        collate_fn=train_data.collate,
        num_workers=cfg.num_workers,
    )
    # The iterator is made before the RNG is set: making it draws a seed from torch's RNG, and
    # a fresh and a resumed run must then continue from the same RNG state.
    batches = iter(loader)
    if state is not None:
        saved_rng = state["rng"]
        rngs = saved_rng if isinstance(saved_rng, list) else [saved_rng]
        _set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    else:
        # Seeded here, not by the caller, so that a resumed run and a fresh one share one stream.
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

    engine_model.train()
    # The frozen ViT stays in inference mode, as in the authors' code.
    model.global_encoder.eval()

    def snapshot(kind: str) -> dict[str, Any]:
        return {
            "kind": kind,
            "step": step,
            "epoch": epoch,  # epoch checkpoint: epochs completed; step checkpoint: the running one
            "position": position,
            "epoch_loss": epoch_loss,
            "history": history,
            "world_size": world,
            "config": {k: getattr(cfg, k) for k in _RESUME_KEYS},
        }

    stopped = False
    try:
        while epoch < cfg.epochs and not stopped:
            t_print, window = time.perf_counter(), 0
            while step - epoch * cfg.iters_per_epoch < cfg.iters_per_epoch:
                t0 = time.perf_counter()
                lr = cfg.schedule.lr(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step_loss, samples, tokens = 0.0, 0.0, 0.0
                for _micro in range(cfg.grad_accum):
                    batch = _to(next(batches), device)
                    n_local = _answer_tokens(batch["labels"])
                    with accelerator.accumulate(engine_model):
                        with accelerator.autocast():
                            loss = engine_model(**batch).loss
                        if world > 1:
                            sums = accelerator.reduce(
                                torch.tensor(
                                    [
                                        float(loss.detach()) * n_local,
                                        n_local,
                                        batch["attention_mask"].sum().item(),
                                        batch["labels"].shape[0],
                                    ],
                                    dtype=torch.float64,
                                    device=device,
                                )
                            )
                            n_global = max(float(sums[1]), 1.0)
                            value = float(sums[0]) / n_global
                            tokens += float(sums[2])
                            samples += float(sums[3])
                            # DDP averages gradients over ranks: weighting each rank's mean by its
                            # token share makes that average the global token mean's gradient.
                            objective = loss * (n_local * world / n_global)
                        else:
                            value = loss.item()
                            tokens += float(batch["attention_mask"].sum())
                            samples += batch["labels"].shape[0]
                            objective = loss
                        if not math.isfinite(value) and cfg.precision != "fp16":
                            raise TrainError(f"loss is {value} at step {step}; lower the lr")
                        accelerator.backward(objective)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    step_loss += value / cfg.grad_accum
                log.step(step, epoch, step_loss, lr, samples, tokens, time.perf_counter() - t0)
                step += 1
                position += per_step
                window += 1
                epoch_loss += step_loss
                if main and step % cfg.log_every == 0:
                    rate = window * per_step / max(time.perf_counter() - t_print, 1e-9)
                    print(f"epoch {epoch} step {step} loss {step_loss:.4f} lr {lr:.3e} {rate:.1f} samples/s")
                    t_print, window = time.perf_counter(), 0
                epoch_end = step - epoch * cfg.iters_per_epoch == cfg.iters_per_epoch
                if cfg.save_every is not None and step % cfg.save_every == 0 and not epoch_end:
                    name = f"step_{step}"
                    _save_checkpoint(accelerator, engine_model, model, optimizer, out, name, snapshot("step"))
                    if main:
                        _write_json_atomic(out / LAST_FILE, {"dir": name, "epoch": epoch, "step": step})
                        _prune_step_checkpoints(out, cfg.keep_last)
                    accelerator.wait_for_everyone()
                if stop_after_step is not None and step >= stop_after_step and not epoch_end:
                    stopped = True
                    break
            if stopped:
                break
            history["losses"].append(epoch_loss / cfg.iters_per_epoch)
            if val_data is not None:
                val = validation_loss(engine_model, val_data, cfg, device, accelerator=accelerator)
                history["val_losses"].append(val)
                if history["best_val"] is None or val < history["best_val"]:
                    history["best_val"], history["best_epoch"] = val, epoch
                values = {"val/loss": val}
                if main:
                    print(f"epoch {epoch} validation loss {val:.4f}", flush=True)
                if cfg.eval_metrics and val_dataset is not None:
                    found = None
                    if main:
                        with accelerator.autocast():
                            found = emotion_metrics(
                                accelerator.unwrap_model(engine_model), processor, val_dataset,
                                max_clips=cfg.eval_max_clips,
                            )  # fmt: skip
                    accelerator.wait_for_everyone()
                    if found is not None:
                        history["val_metrics"].append({"epoch": epoch, **found})
                        values.update({f"val/{k}": v for k, v in found.items()})
                        print(
                            f"epoch {epoch} emotion accuracy {found['accuracy']:.4f} "
                            f"weighted F1 {found['weighted_f1']:.4f}",
                            flush=True,
                        )
                log.values(values, step=step - 1)
                engine_model.train()
                model.global_encoder.eval()
            epoch += 1
            epoch_loss = 0.0
            name = f"epoch_{epoch - 1}"
            _save_checkpoint(accelerator, engine_model, model, optimizer, out, name, snapshot("epoch"))
            if main:
                _write_json_atomic(out / LAST_FILE, {"dir": name, "epoch": epoch - 1, "step": step})
                if val_data is not None and history["best_epoch"] == epoch - 1:
                    _write_json_atomic(
                        out / BEST_FILE, {"dir": name, "epoch": epoch - 1, "val_loss": history["best_val"]}
                    )
            accelerator.wait_for_everyone()
            if stop_after_epoch is not None and epoch - 1 >= stop_after_epoch:
                break
            if stop_after_step is not None and step >= stop_after_step:
                break
    finally:
        log.close()
        # Leave the caller's model as it came: no mixed-precision forward wrapper, no checkpointing.
        accelerator.unwrap_model(engine_model, keep_fp32_wrapper=False)
        if cfg.gradient_checkpointing:
            _set_gradient_checkpointing(model, False)
    return {
        "losses": list(history["losses"]),
        "val_losses": list(history["val_losses"]),
        "val_metrics": list(history["val_metrics"]),
        "best_epoch": history["best_epoch"],
        "step": step,
        "epochs_done": epoch,
        "main_process": main,
    }
