"""The settings of the training loop (the ``train:`` and ``schedule:`` sections of a recipe).

:class:`TrainConfig` is what :func:`emotion_llama.train.loop.train` reads; a recipe
(:mod:`emotion_llama.train.recipe`) fills it from YAML. The model's own configuration is
:class:`emotion_llama.config.EmotionLlamaConfig`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.train.schedule import Schedule

Precision = Literal["fp32", "bf16", "fp16"]
LogWith = Literal["tensorboard", "wandb", "none"]
LOG_WITH: tuple[str, ...] = ("tensorboard", "wandb", "none")
#: Settings that fix what the stream position means; a resume with other values is refused.
RESUME_KEYS = ("batch_size", "grad_accum", "iters_per_epoch", "seed")


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
    #: Chance that a training item loses one modality, drawn among video, audio and text (its
    #: parts get no positions, its subtitle is emptied), so the model learns to answer without it.
    modality_dropout: float = 0.0

    def validate(self) -> TrainConfig:
        import torch

        for key in ("epochs", "iters_per_epoch", "batch_size", "grad_accum", "log_every", "keep_last"):
            if getattr(self, key) < 1:
                raise TrainError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise TrainError(f"train.modality_dropout must be in [0, 1), got {self.modality_dropout}")
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

    def resume_settings(self) -> dict[str, Any]:
        """The settings a checkpoint records and a resume must match (:data:`RESUME_KEYS`)."""
        return {k: getattr(self, k) for k in RESUME_KEYS}
