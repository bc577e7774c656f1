"""Checkpoints of a training run: what they hold, how they are written, how a run resumes.

A run folder ``out_dir`` holds ``epoch_{k}/`` after each epoch and ``step_{N}/`` every
``save_every`` optimiser steps (only the newest ``keep_last`` step checkpoints are kept; epoch
checkpoints stay). Each is written under a temporary name and renamed, then ``out_dir/last``
(JSON ``{"dir", "epoch", "step"}``) is pointed at it; after an epoch whose validation loss is the
lowest so far, ``out_dir/best`` (JSON ``{"dir", "epoch", "val_loss"}``) too. A checkpoint holds
the trainable weights (``save_pretrained``) and ``trainer_state.pt``: the
:class:`TrainingProgress` (step, epoch, stream position, partial epoch loss, history), the
optimiser and grad-scaler states (FSDP: one optimiser file per rank; DeepSpeed: its own folder),
the RNG states of every rank, the world size and the settings a resume must match.
``out_dir/train_clips.txt`` lists the names of the clips the run trained on (for ``evaluate``'s
overlap warning).

:class:`Checkpointer` is the one place that writes checkpoints and pointers, and resumes from
``last``: all of that restored, mid-epoch included, so an interrupted run ends with the weights
of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from emotion_llama.files import atomic_write_text
from emotion_llama.model.checkpoint import (
    BEST_FILE,
    FROZEN_FILE,
    LAST_FILE,
    TRAIN_CLIPS_FILE,
    WEIGHTS_FILE,
    load_trainable,
    read_safetensors,
    save_pretrained,
)
from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.train.config import RESUME_KEYS, TrainConfig, TrainError
from emotion_llama.train.engine import SHARDED, engine_kind, gather_objects

if TYPE_CHECKING:
    from accelerate import Accelerator

STATE_FILE = "trainer_state.pt"
CheckpointKind = Literal["step", "epoch"]


@dataclass
class TrainingProgress:
    """Where a run stands; saved in every checkpoint and restored on resume."""

    #: Optimiser steps done (0-based index of the next step).
    step: int = 0
    #: Epochs completed (the running epoch's index).
    epoch: int = 0
    #: Stream positions consumed, over all processes (see :mod:`emotion_llama.train.sampler`).
    position: int = 0
    #: Sum of the running epoch's step losses.
    epoch_loss: float = 0.0
    #: Mean training loss of each completed epoch.
    losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    #: ``{"epoch", "accuracy", "weighted_f1"}`` per validated epoch (with ``eval_metrics``).
    val_metrics: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_val: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "epoch_loss": self.epoch_loss,
            "history": {
                "losses": self.losses,
                "val_losses": self.val_losses,
                "val_metrics": self.val_metrics,
                "best_epoch": self.best_epoch,
                "best_val": self.best_val,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])
        self.epoch_loss = float(state.get("epoch_loss", 0.0))
        history = dict(state["history"])
        self.losses = history.get("losses", [])
        self.val_losses = history.get("val_losses", [])
        self.val_metrics = history.get("val_metrics", [])
        self.best_epoch = history.get("best_epoch")
        self.best_val = history.get("best_val")

    # -- updates, in the order the loop makes them ----------------------------------------------
    def record_step(self, loss: float, items: int) -> None:
        """One optimiser step of mean loss ``loss`` that consumed ``items`` stream positions."""
        self.step += 1
        self.position += items
        self.epoch_loss += loss

    def at_epoch_end(self, iters_per_epoch: int) -> bool:
        return self.step - self.epoch * iters_per_epoch == iters_per_epoch

    def close_epoch_loss(self, iters_per_epoch: int) -> None:
        self.losses.append(self.epoch_loss / iters_per_epoch)

    def record_validation(self, val_loss: float, metrics: dict[str, float] | None) -> None:
        """The running epoch's validation loss (and emotion metrics, when computed)."""
        self.val_losses.append(val_loss)
        if self.best_val is None or val_loss < self.best_val:
            self.best_val, self.best_epoch = val_loss, self.epoch
        if metrics is not None:
            self.val_metrics.append({"epoch": self.epoch, **metrics})

    def finish_epoch(self) -> None:
        self.epoch += 1
        self.epoch_loss = 0.0

    def summary(self, main_process: bool) -> dict[str, Any]:
        """What :func:`emotion_llama.train.loop.train` returns."""
        return {
            "losses": list(self.losses),
            "val_losses": list(self.val_losses),
            "val_metrics": list(self.val_metrics),
            "best_epoch": self.best_epoch,
            "step": self.step,
            "epochs_done": self.epoch,
            "main_process": main_process,
        }


# -- RNG states ------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
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


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rng(saved: dict[str, Any], rank: int) -> None:
    """This rank's RNG states from a checkpoint's state (rank 0's for a rank the run lacked)."""
    rngs = saved["rng"] if isinstance(saved["rng"], list) else [saved["rng"]]
    set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- files -----------------------------------------------------------------------------------------
def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def read_pointer(out_dir: str | Path, which: str = LAST_FILE) -> dict[str, Any] | None:
    """The ``last`` or ``best`` pointer of a run folder, or ``None`` when absent."""
    path = Path(out_dir) / which
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise TrainError(f"{path}: unreadable pointer ({exc})") from None


def read_train_clips(path: Path) -> set[str]:
    """The clip names of a ``train_clips.txt`` (one a line); empty when the file is absent."""
    if not path.is_file():
        return set()
    return {line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def record_train_clips(out_dir: str | Path, names: Iterable[str]) -> Path:
    """Add ``names`` to the run's ``train_clips.txt`` (kept sorted, written atomically): what
    ``evaluate`` compares the benchmark's clip names with. A resumed run or a recipe's
    ``init_from`` adds to what is there, never removes."""
    path = Path(out_dir) / TRAIN_CLIPS_FILE
    known = read_train_clips(path)
    merged = known | set(names)
    if merged != known or not path.is_file():
        atomic_write_text(path, "".join(f"{n}\n" for n in sorted(merged)))
    return path


def step_checkpoints(out_dir: str | Path) -> list[Path]:
    """The ``step_{N}`` folders of a run, oldest first."""
    found = []
    for p in Path(out_dir).glob("step_*"):
        suffix = p.name[len("step_") :]
        if p.is_dir() and suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found)]


def prune_step_checkpoints(out: Path, keep: int) -> None:
    for old in step_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _sharded_trainable_state(full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from emotion_llama.model.keys import is_trainable_key, to_canonical_key

    return {to_canonical_key(k): v for k, v in full.items() if is_trainable_key(k)}


_BASE_LLM = "llm.base_model.model."


def sharded_frozen_state(full: dict[str, torch.Tensor], model: EmotionLlama) -> dict[str, torch.Tensor]:
    """What ``frozen.safetensors`` holds (:func:`~emotion_llama.model.builder.frozen_state_dict`:
    the frozen parts without an external source), taken from a gathered full state dict under
    the module's key names: under FSDP the module's own frozen tensors are shards."""
    out: dict[str, torch.Tensor] = {}
    if model.config.vision.weights is None:
        out.update({k: v for k, v in full.items() if k.startswith("global_encoder.")})
    if model.config.llm.name_or_path is None:
        for k, v in full.items():
            if k.startswith(_BASE_LLM) and ".lora_" not in k:
                out["llm_base." + k[len(_BASE_LLM) :].replace(".base_layer.", ".")] = v
    return out


def _gathered_weights(
    accelerator: Accelerator, engine: str, engine_model: Any, model: EmotionLlama
) -> dict[str, torch.Tensor] | None:
    """The full weights of a sharded engine on the main process (``None`` when not sharded): all
    of them, or with the project's FSDP2 and DeepSpeed only the trainable ones when no frozen part
    needs saving (the paper model: its frozen parts come from their sources)."""
    from accelerate.utils import DistributedType

    if engine not in SHARDED:
        return None
    needs_frozen = model.config.vision.weights is None or model.config.llm.name_or_path is None
    if engine == "fsdp2":
        from emotion_llama.train import fsdp

        return fsdp.gathered_state(engine_model, trainable_only=not needs_frozen)
    if engine == "deepspeed3" and accelerator.distributed_type != DistributedType.DEEPSPEED:
        from emotion_llama.train import deepspeed_engine

        return deepspeed_engine.gathered_state(engine_model, trainable_only=not needs_frozen)
    return dict(accelerator.get_state_dict(engine_model))


def save_checkpoint(
    accelerator: Accelerator,
    engine: str,
    engine_model: Any,
    model: EmotionLlama,
    optimizer: Any,
    out: Path,
    name: str,
    state: dict[str, Any],
) -> Path:
    """Write ``out/name`` atomically (``engine``: :func:`engine_kind`); every process calls this
    (collectives inside)."""
    from emotion_llama.model.checkpoint import write_safetensors

    final, tmp = out / name, out / f".{name}.tmp"
    main = accelerator.is_main_process
    # Collectives first, on every rank.
    state = {**state, "rng": gather_objects(accelerator, rng_state())}
    full = _gathered_weights(accelerator, engine, engine_model, model)
    if engine == "fsdp2":
        from emotion_llama.train.fsdp import gathered_optimizer_state

        state["optimizer"] = gathered_optimizer_state(engine_model, optimizer)
    if main:
        if tmp.exists():
            shutil.rmtree(tmp)
        if full is None:
            save_pretrained(model, tmp)
        else:
            # Parameters are sharded: the gathered full state replaces the module's own.
            tmp.mkdir(parents=True)
            write_safetensors(_sharded_trainable_state(full), tmp / WEIGHTS_FILE, {"format": "emotion-llama"})
            frozen = sharded_frozen_state(full, model)
            if frozen:
                write_safetensors(frozen, tmp / FROZEN_FILE, {"format": "emotion-llama"})
            model.config.to_json(tmp / "config.json")
        if engine == "plain":
            state["optimizer"] = optimizer.state_dict()
        if engine in ("plain", "fsdp2"):
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


def named_optimizer_state(state: dict[str, Any]) -> bool:
    """Whether a checkpoint's optimiser state is keyed by parameter name (saved by the project's
    FSDP2) rather than by position (one process or DDP)."""
    groups = (state.get("optimizer") or {}).get("param_groups") or []
    return any(isinstance(p, str) for g in groups for p in g.get("params", []))


def load_engine_state(
    accelerator: Accelerator,
    engine: str,
    engine_model: Any,
    optimizer: Any,
    folder: Path,
    state: dict[str, Any],
) -> None:
    """The optimiser (and grad scaler) states of a checkpoint, into the prepared engine."""
    if engine in ("plain", "fsdp2"):
        if engine == "plain" and not named_optimizer_state(state):
            optimizer.load_state_dict(state["optimizer"])
        else:
            # Keyed by parameter name (the project's FSDP2): into the shards, or into a plain model.
            from emotion_llama.train.fsdp import load_optimizer_state

            model = engine_model if engine == "fsdp2" else accelerator.unwrap_model(engine_model)
            load_optimizer_state(model, optimizer, state["optimizer"])
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


class Checkpointer:
    """The run's checkpoints: resume from ``last``, write ``step_{N}`` / ``epoch_{k}`` and point
    ``last`` (and ``best``) at them. Every process calls every method (collectives inside); only
    the main process writes files."""

    def __init__(self, accelerator: Accelerator, out: Path, cfg: TrainConfig, model: EmotionLlama) -> None:
        self.accelerator, self.out, self.cfg, self.model = accelerator, out, cfg, model
        self.engine = engine_kind(accelerator, cfg)
        self.engine_model: Any = None
        self.optimizer: Any = None
        #: The checkpoint folder :meth:`load_last` resumed from, if any.
        self.resumed_from: Path | None = None
        self._saved: dict[str, Any] | None = None

    def load_last(self, progress: TrainingProgress) -> dict[str, Any] | None:
        """Load the trainable weights and ``progress`` of the checkpoint ``last`` points at, after
        checking it can be resumed here; its saved state, or ``None`` without one."""
        last = read_pointer(self.out)
        if last is None:
            return None
        folder = self.out / str(last["dir"])
        if not (folder / STATE_FILE).is_file():
            raise TrainError(
                f"{self.out / LAST_FILE}: points at {folder}, which has no {STATE_FILE}; "
                "use another out_dir or resume=False"
            )
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        saved_cfg = state["config"]
        changed = [k for k in RESUME_KEYS if saved_cfg.get(k) != getattr(self.cfg, k)]
        if changed:
            raise TrainError(
                f"{folder}: cannot resume, {', '.join(changed)} differ from the saved run; "
                "use another out_dir or resume=False"
            )
        if self.engine == "fsdp2" and state.get("optimizer") is not None and not named_optimizer_state(state):
            raise TrainError(
                f"{folder}: saved by one process or DDP; resume it with train.fsdp=false (a run saved "
                "under train.fsdp resumes either way)"
            )
        world = self.accelerator.num_processes
        saved_world = int(state.get("world_size", 1))
        if saved_world != world and self.engine not in ("plain", "fsdp2"):
            raise TrainError(f"{folder}: saved by {saved_world} processes; this engine resumes with as many")
        load_trainable(self.model, read_safetensors(folder / WEIGHTS_FILE), folder / WEIGHTS_FILE)
        progress.load_state_dict(state)
        if saved_world != world and self.accelerator.is_main_process:
            print(f"note: the run was saved by {saved_world} processes and resumes with {world}", flush=True)
        self.resumed_from, self._saved = folder, state
        return state

    def attach(self, engine_model: Any, optimizer: Any) -> None:
        """The prepared model and optimiser; a resumed run gets its optimiser state back here."""
        self.engine_model, self.optimizer = engine_model, optimizer
        if self.resumed_from is not None and self._saved is not None:
            load_engine_state(
                self.accelerator, self.engine, engine_model, optimizer, self.resumed_from, self._saved
            )

    def save(self, progress: TrainingProgress, kind: CheckpointKind) -> Path:
        """``step_{N}`` (mid-epoch; older ones pruned to ``keep_last``) or ``epoch_{k}`` (after
        :meth:`TrainingProgress.finish_epoch`; ``best`` too when that epoch's validation loss is
        the lowest so far), then ``last``. Pointers are written atomically after the folder."""
        if kind == "step":
            name = f"step_{progress.step}"
            pointer: dict[str, Any] = {"dir": name, "epoch": progress.epoch, "step": progress.step}
        else:
            done = progress.epoch - 1
            name = f"epoch_{done}"
            pointer = {"dir": name, "epoch": done, "step": progress.step}
        state = {
            "kind": kind,
            # epoch checkpoint: epochs completed; step checkpoint: the running one
            **progress.state_dict(),
            "world_size": self.accelerator.num_processes,
            "config": self.cfg.resume_settings(),
        }
        folder = save_checkpoint(
            self.accelerator, self.engine, self.engine_model, self.model, self.optimizer, self.out, name,
            state,
        )  # fmt: skip
        if self.accelerator.is_main_process:
            write_json_atomic(self.out / LAST_FILE, pointer)
            if kind == "step":
                prune_step_checkpoints(self.out, self.cfg.keep_last)
            elif progress.best_epoch == progress.epoch - 1:
                best = {"dir": name, "epoch": progress.epoch - 1, "val_loss": progress.best_val}
                write_json_atomic(self.out / BEST_FILE, best)
        self.accelerator.wait_for_everyone()
        return folder
