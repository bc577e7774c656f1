"""A plain PyTorch training loop for the recipe of SPEC 4, resumable at epoch boundaries.

* AdamW (betas, weight decay on matrices only via :func:`param_groups`), the lr of
  :class:`Schedule` set on every optimiser step (``step`` = global optimiser step from 0).
* "Epochs" of ``iters_per_epoch`` optimiser steps, each consuming ``batch_size * grad_accum``
  items drawn from an infinite stream of shuffled passes over the dataset.
* After each epoch: ``out_dir/epoch_{k}/`` (``save_pretrained`` + ``trainer_state.pt``) written
  under a temporary name and renamed, then ``out_dir/last`` (JSON) points at it. With a
  validation set, ``out_dir/best`` (JSON) names the epoch with the lowest validation loss.
* Resume restores weights, optimiser, scaler, step, epoch, the RNG states and the stream
  position, so an interrupted run ends with the weights of an uninterrupted one.
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
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.checkpoint import WEIGHTS_FILE, load_trainable, read_safetensors, save_pretrained
from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.train.data import TrainDataset
from emotion_llama.train.schedule import Schedule, param_groups

Precision = Literal["fp32", "bf16", "fp16"]
STATE_FILE = "trainer_state.pt"
LAST_FILE = "last"
BEST_FILE = "best"
#: Settings that fix what the stream position means; a resume with other values is refused.
_RESUME_KEYS = ("batch_size", "grad_accum", "iters_per_epoch", "seed")


class TrainError(EmotionLlamaError):
    """Training cannot start or resume as configured."""


@dataclass
class TrainConfig:
    schedule: Schedule = field(default_factory=Schedule.stage1)
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = 30
    iters_per_epoch: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    seed: int = 42
    precision: Precision = "fp32"
    out_dir: str | Path = "runs/train"
    log_every: int = 50
    num_workers: int = 0
    device: str = "cpu"

    def validate(self) -> TrainConfig:
        for key in ("epochs", "iters_per_epoch", "batch_size", "grad_accum", "log_every"):
            if getattr(self, key) < 1:
                raise TrainError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise TrainError(f"precision must be fp32, bf16 or fp16, not {self.precision!r}")
        if self.precision == "fp16" and torch.device(self.device).type == "cpu":
            raise TrainError("fp16 needs a GPU; on CPU use bf16 or fp32")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


class StreamSampler(Sampler[tuple[int, int]]):
    """Infinite shuffled passes; yields ``(index, draw)`` from stream position ``start`` on.

    Pass ``p`` is a permutation seeded by ``(seed, p)``, so the item at any position is a pure
    function of that position: resuming needs only the count of items consumed, even when
    loader workers prefetched further than the loop consumed.
    """

    def __init__(self, n: int, seed: int, start: int = 0) -> None:
        self.n, self.seed, self.start = n, seed, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos = self.start
        while True:
            p, offset = divmod(pos, self.n)
            perm = np.random.default_rng([self.seed, p]).permutation(self.n)
            for i in range(offset, self.n):
                yield int(perm[i]), pos
                pos += 1


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
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_pointer(out_dir: str | Path, which: str = LAST_FILE) -> dict[str, Any] | None:
    """The ``last`` or ``best`` pointer of a run folder, or ``None`` when absent."""
    path = Path(out_dir) / which
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise TrainError(f"{path}: unreadable pointer ({exc})") from None


def _save_epoch(model: EmotionLlama, out: Path, epoch: int, state: dict[str, Any]) -> Path:
    final = out / f"epoch_{epoch}"
    tmp = out / f".epoch_{epoch}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_pretrained(model, tmp)
    torch.save(state, tmp / STATE_FILE)
    # The folder appears complete or not at all; a rerun of the same epoch replaces it.
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


# -- loop ----------------------------------------------------------------------------------------
def _autocast(cfg: TrainConfig, device: torch.device) -> Any:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def validation_loss(
    model: EmotionLlama, dataset: TrainDataset, cfg: TrainConfig, device: torch.device | None = None
) -> float:
    """Mean per-token answer loss over every clip of ``dataset`` with draw 0 (a fixed task and
    instruction per clip, so epochs are compared on the same text)."""
    device = device or torch.device(cfg.device)
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(dataset), cfg.batch_size):
        items = [dataset[(i, 0)] for i in range(start, min(start + cfg.batch_size, len(dataset)))]
        batch = _to(dataset.collate(items), device)
        # Weighted by answer tokens (minus the shift), so the mean does not depend on batching.
        n = int((batch["labels"][:, 1:] != -100).sum())
        with _autocast(cfg, device):
            loss = model(**batch).loss
        total += float(loss) * n
        tokens += n
    model.train(was_training)
    return total / max(tokens, 1)


def train(
    model: EmotionLlama,
    processor: EmotionLlamaProcessor,
    dataset: TrainDataset,
    cfg: TrainConfig,
    *,
    val_dataset: TrainDataset | None = None,
    resume: bool = True,
    stop_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place; see the module docstring. ``stop_after_epoch`` ends the run
    after that epoch's checkpoint (an interruption at a known point, for tests and jobs with
    a time budget). Returns ``{"losses", "val_losses", "best_epoch", "step", "epochs_done"}``.
    """
    cfg.validate()
    if dataset.processor is not processor:
        raise TrainError("the dataset was built with another processor")
    device = torch.device(cfg.device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(device)
    optimizer = torch.optim.AdamW(
        param_groups(model.named_parameters(), cfg.weight_decay), lr=cfg.schedule.lr(0), betas=cfg.betas
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    per_step = cfg.batch_size * cfg.grad_accum
    history: dict[str, Any] = {"losses": [], "val_losses": [], "best_epoch": None, "best_val": None}
    step, epoch, position = 0, 0, 0

    last = read_pointer(out) if resume else None
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
        load_trainable(model, read_safetensors(folder / WEIGHTS_FILE), folder / WEIGHTS_FILE)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, position = int(state["step"]), int(state["epoch"]), int(state["position"])
        history = dict(state["history"])
        _set_rng_state(state["rng"])
        print(f"resumed from {folder} at epoch {epoch}, step {step}", flush=True)
    else:
        # Seeded here, not by the caller, so that a resumed run and a fresh one share one stream.
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=StreamSampler(len(dataset), cfg.seed, position),
        collate_fn=dataset.collate,
        num_workers=cfg.num_workers,
    )
    batches = iter(loader)
    model.train()
    # The frozen ViT stays in inference mode, as in the authors' code.
    model.global_encoder.eval()

    while epoch < cfg.epochs:
        epoch_loss, t0, window = 0.0, time.perf_counter(), 0
        for _ in range(cfg.iters_per_epoch):
            lr = cfg.schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss = 0.0
            for _micro in range(cfg.grad_accum):
                batch = _to(next(batches), device)
                with _autocast(cfg, device):
                    loss = model(**batch).loss
                if not math.isfinite(loss.item()) and cfg.precision != "fp16":
                    raise TrainError(f"loss is {float(loss)} at step {step}; lower the lr")
                scaler.scale(loss / cfg.grad_accum).backward()
                step_loss += loss.item() / cfg.grad_accum
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            position += per_step
            window += 1
            epoch_loss += step_loss
            if step % cfg.log_every == 0:
                rate = window * per_step / max(time.perf_counter() - t0, 1e-9)
                print(f"epoch {epoch} step {step} loss {step_loss:.4f} lr {lr:.3e} {rate:.1f} samples/s")
                t0, window = time.perf_counter(), 0
        history["losses"].append(epoch_loss / cfg.iters_per_epoch)
        if val_dataset is not None:
            val = validation_loss(model, val_dataset, cfg, device)
            history["val_losses"].append(val)
            if history["best_val"] is None or val < history["best_val"]:
                history["best_val"], history["best_epoch"] = val, epoch
            print(f"epoch {epoch} validation loss {val:.4f}", flush=True)
            model.train()
            model.global_encoder.eval()
        epoch += 1
        state = {
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "epoch": epoch,  # epochs completed, i.e. the next one to run
            "position": position,
            "rng": _rng_state(),
            "history": history,
            "config": {k: getattr(cfg, k) for k in _RESUME_KEYS},
        }
        folder = _save_epoch(model, out, epoch - 1, state)
        _write_json_atomic(out / LAST_FILE, {"dir": folder.name, "epoch": epoch - 1, "step": step})
        if val_dataset is not None and history["best_epoch"] == epoch - 1:
            _write_json_atomic(
                out / BEST_FILE, {"dir": folder.name, "epoch": epoch - 1, "val_loss": history["best_val"]}
            )
        if stop_after_epoch is not None and epoch - 1 >= stop_after_epoch:
            break
    return {
        "losses": list(history["losses"]),
        "val_losses": list(history["val_losses"]),
        "best_epoch": history["best_epoch"],
        "step": step,
        "epochs_done": epoch,
    }
