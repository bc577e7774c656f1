"""Learning-rate schedules and AdamW parameter groups of the authors' recipe (SPEC 4). No torch.

Stage 1: warm-up 1e-6 -> 1e-5 over 1000 steps, then cosine down to 1e-6; stage 2: constant 1e-6.

How the cosine counts (our reading of SPEC 4 and of the MiniGPT-4 scheduler it comes from)
--------------------------------------------------------------------------------------------
SPEC 4 gives ``(init - min) * 0.5 * (1 + cos(pi * step / total)) + min`` after the warm-up. In
the authors' scheduler the cosine is called with the *epoch* index and the number of epochs
(``cosine_lr_schedule(epoch=cur_epoch, max_epoch=max_epoch)``), while the warm-up is called with
the iteration inside epoch 0 and only applies while ``cur_epoch == 0``. So in the original:

* ``step`` in the cosine is the index of the epoch the iteration belongs to, counted from 0
  (the warm-up epoch included, it is not subtracted), and ``total`` is the number of epochs;
* the lr is therefore constant within an epoch: stage 1 runs epoch 1 at ~9.98e-6 and its last
  epoch (29 of 30) at ~1.02e-6, never exactly ``min``; the first epoch never quite reaches
  ``init`` (its last warm-up step is 999/1000 of the way);
* warm-up happens only inside the first epoch (the authors assume it is shorter than one).

:func:`lr_at` reproduces that when given ``iters_per_epoch``: ``step`` is the global iteration,
the cosine uses ``step // iters_per_epoch`` over ``total_steps / iters_per_epoch`` epochs.
Without ``iters_per_epoch`` it is the same formula per iteration (``step`` and ``total_steps``
both count iterations from 0, warm-up included), the smooth variant for runs that do not use
fixed-size epochs. Past ``total_steps`` the lr stays at ``min_lr`` instead of rising again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from emotion_llama.errors import EmotionLlamaError

ScheduleKind = Literal["warmup_cosine", "constant"]
SCHEDULE_KINDS: tuple[str, ...] = ("warmup_cosine", "constant")


class ScheduleError(EmotionLlamaError, ValueError):
    """A learning-rate schedule or its arguments are inconsistent."""


def lr_at(
    step: int,
    *,
    init_lr: float,
    min_lr: float,
    warmup_lr: float,
    warmup_steps: int,
    total_steps: int,
    iters_per_epoch: int | None = None,
) -> float:
    """The warm-up + cosine learning rate at global iteration ``step`` (0-based); see the module
    docstring for what the cosine counts. ``iters_per_epoch`` selects the authors' per-epoch
    cosine; ``None`` the per-iteration one."""
    if step < 0:
        raise ScheduleError(f"step must be >= 0, got {step}")
    if total_steps < 1:
        raise ScheduleError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ScheduleError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if iters_per_epoch is not None and iters_per_epoch < 1:
        raise ScheduleError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")
    # The authors warm up only inside epoch 0; in per-iteration mode there are no epochs.
    in_first_epoch = iters_per_epoch is None or step < iters_per_epoch
    if step < warmup_steps and in_first_epoch:
        return min(init_lr, warmup_lr + (init_lr - warmup_lr) * step / warmup_steps)
    if iters_per_epoch is None:
        progress = step / total_steps
    else:
        progress = (step // iters_per_epoch) / (total_steps / iters_per_epoch)
    # Clamped so that extra iterations after the planned end do not climb back up the cosine.
    progress = min(progress, 1.0)
    return (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)) + min_lr


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: ``warmup_cosine`` (stage 1) or ``constant`` (stage 2, at
    ``init_lr``). Steps are global iterations counted from 0."""

    kind: ScheduleKind = "warmup_cosine"
    init_lr: float = 1e-5
    min_lr: float = 1e-6
    warmup_lr: float = 1e-6
    warmup_steps: int = 1000
    total_steps: int = 30_000
    #: Iterations per "epoch"; set, the cosine steps once per epoch as in the authors' code.
    iters_per_epoch: int | None = 1000

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ScheduleError(
                f"unknown schedule kind {self.kind!r}; choose one of: {', '.join(SCHEDULE_KINDS)}"
            )
        if self.init_lr <= 0:
            raise ScheduleError(f"init_lr must be positive, got {self.init_lr}")
        if self.kind == "warmup_cosine" and not 0 <= self.min_lr <= self.init_lr:
            raise ScheduleError(f"min_lr {self.min_lr} must lie in [0, init_lr {self.init_lr}]")

    @classmethod
    def stage1(cls, epochs: int = 30, iters_per_epoch: int = 1000) -> Schedule:
        """SPEC 4 stage 1: warm-up 1e-6 -> 1e-5 over 1000 steps, cosine to 1e-6 per epoch."""
        return cls("warmup_cosine", 1e-5, 1e-6, 1e-6, 1000, epochs * iters_per_epoch, iters_per_epoch)

    @classmethod
    def stage2(cls) -> Schedule:
        """SPEC 4 stage 2: constant 1e-6."""
        return cls("constant", init_lr=1e-6, min_lr=1e-6, warmup_steps=0)

    def lr(self, step: int) -> float:
        if step < 0:
            raise ScheduleError(f"step must be >= 0, got {step}")
        if self.kind == "constant":
            return self.init_lr
        return lr_at(
            step,
            init_lr=self.init_lr,
            min_lr=self.min_lr,
            warmup_lr=self.warmup_lr,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            iters_per_epoch=self.iters_per_epoch,
        )


def param_groups(
    named_parameters: Iterable[tuple[str, Any]], weight_decay: float = 0.05
) -> list[dict[str, Any]]:
    """AdamW groups of SPEC 4: ``weight_decay`` on matrices (ndim >= 2), 0 on biases and norm
    weights (ndim < 2). Frozen parameters are left out, so the optimiser holds no state for them.

    The authors' runner also matched names containing ``bias``/``ln``/``bn``; for the parameters
    Emotion-LLaMA trains (LoRA matrices, projection weights and biases) that selects the same
    split, so the shape rule alone is used. Empty groups are dropped.
    """
    decay: list[Any] = []
    no_decay: list[Any] = []
    seen: set[int] = set()
    for _name, p in named_parameters:
        if not p.requires_grad:
            continue
        # Tied or shared parameters may be listed twice; an optimiser rejects duplicates.
        if id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
