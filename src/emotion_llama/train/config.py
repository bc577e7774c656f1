"""The settings of the training loop (the ``train:`` and ``schedule:`` sections of a recipe).

:class:`TrainConfig` is what :func:`emotion_llama.train.loop.train` reads; a recipe
(:mod:`emotion_llama.train.recipe`) fills it from YAML. The model's own configuration is
:class:`emotion_llama.config.EmotionLlamaConfig`. Stage 3 (``stage: grpo``) adds the ``grpo:``
and ``rewards:`` sections, :class:`GrpoConfig` and its :class:`RewardWeights`, which
:func:`emotion_llama.train.grpo_loop.train_grpo` reads beside the :class:`TrainConfig`.
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
    #: Compile each of the LLM's decoder layers with ``torch.compile`` (inductor, dynamic shapes;
    #: the first steps pay the compile time): the same loss and gradients within float rounding.
    compile: bool = False
    #: Run the frozen ViT once per clip before training and train on its cached output.
    cache_vit: bool = False
    #: Shard the model over the processes of a DDP launch with PyTorch's FSDP2 (the project's own
    #: path, CPU and GPU; :mod:`emotion_llama.train.fsdp`).
    fsdp: bool = False
    #: A DeepSpeed JSON config (``configs/accelerate/ds_zero2.json``, ``ds_zero3.json``): the project
    #: runs DeepSpeed ZeRO itself under a DDP launch, CPU too (:mod:`emotion_llama.train.deepspeed_engine`).
    deepspeed: str | None = None
    #: QLoRA: the LLM's linear layers frozen in bitsandbytes ``8bit`` (LLM.int8) or ``4bit`` (NF4),
    #: LoRA and the projections trained on top (:mod:`emotion_llama.model.quantize`); ``None``: off.
    quantization: str | None = None
    #: After each validation: label accuracy and weighted F1 of the emotion task (greedy).
    eval_metrics: bool = False
    eval_max_clips: int = 64
    #: Chance that a training item loses one modality, drawn among video, audio and text (its
    #: parts get no positions, its subtitle is emptied), so the model learns to answer without it.
    modality_dropout: float = 0.0

    def validate(self) -> TrainConfig:
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
        if self.fsdp and self.deepspeed:
            raise TrainError("train.fsdp and train.deepspeed are two engines: choose one")
        from emotion_llama.model.quantize import check_trainable_quantization

        try:
            self.quantization = check_trainable_quantization(self.quantization)
        except EmotionLlamaError as exc:
            raise TrainError(f"train.quantization: {exc}") from None
        if self.quantization and (self.fsdp or self.deepspeed):
            raise TrainError(
                "train.quantization (QLoRA) runs on one device per process: bitsandbytes weights "
                "cannot be sharded by train.fsdp or train.deepspeed; drop one"
            )
        if self.compile and (self.fsdp or self.deepspeed or self.quantization):
            other = next(f"train.{k}" for k in ("fsdp", "deepspeed", "quantization") if getattr(self, k))
            raise TrainError(
                f"train.compile compiles the plain LLM's layers (one device per process, DDP too); "
                f"not with {other}: drop one"
            )
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


AnswerFormat = Literal["plain", "think"]
ANSWER_FORMATS: tuple[str, ...] = ("plain", "think")
LossNorm = Literal["sequence", "token"]
LOSS_NORMS: tuple[str, ...] = ("sequence", "token")
Parser = Literal["robust", "last_word"]
PARSERS: tuple[str, ...] = ("robust", "last_word")


@dataclass
class RewardWeights:
    """The weight of each reward component in the total reward (the ``rewards:`` section); a
    component of weight 0 is not computed (accuracy, which is always logged, excepted)."""

    #: 1 when the parsed label is the gold label, else 0.
    accuracy: float = 1.0
    #: 1 when the answer has the configured form (``grpo.answer_format``), else 0.
    format: float = 0.5
    #: Open-vocabulary overlap (emotion-wheel Fs of the answer's words against the gold words).
    ov: float = 0.0
    #: 1 when the reasoning names only clues the clip has (the faithfulness check), else 0.
    faithful: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "format": self.format, "ov": self.ov, "faithful": self.faithful}


@dataclass
class GrpoConfig:
    """Stage 3: GRPO with verifiable rewards (the ``grpo:`` section; docs/training.md)."""

    #: Answers sampled per prompt (G); the advantages are normalised within each group.
    group_size: int = 8
    #: Weight of the k3 KL estimate to the reference (the starting weights); 0 skips it.
    beta: float = 0.04
    #: The ratio is clipped to [1 - clip_eps, 1 + clip_eps_high].
    clip_eps: float = 0.2
    #: Upper clip (DAPO's clip-higher); ``None`` means ``clip_eps``.
    clip_eps_high: float | None = None
    #: Optimiser steps per batch of rollouts (mu); above 1 the ratio and its clip are active.
    iterations: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    #: ``plain``: the project's answer, a text whose last word is the label; ``think``:
    #: ``<think>...</think><answer>...</answer>``.
    answer_format: AnswerFormat = "plain"
    #: With ``think``: a reasoning longer than this many words fails the format reward.
    max_think_words: int | None = None
    #: How the label is read: ``robust`` (label words and synonyms, negated mentions skipped) or
    #: ``last_word`` (the authors' rule, without its neutral default).
    parser: Parser = "robust"
    #: The label set: ``mer6``, ``merr9``, ``dfew7`` or a file with one label per line.
    labels: str = "mer6"
    #: The task of the prompt (its ``[task]`` tag and default instruction); the gold label is the
    #: clip's emotion target whatever the task.
    task: str = "emotion"
    #: The instruction; ``None``: the task's (with ``think``, followed by the format's).
    instruction: str | None = None
    #: The prompt layout (``training`` or ``inference``); ``None``: the model's ``prompt.layout``,
    #: the one generation and evaluation use.
    layout: str | None = None
    #: ``sequence``: each answer's token mean, then the mean over answers (GRPO); ``token``: the
    #: mean over all answer tokens (DAPO).
    loss_norm: LossNorm = "sequence"
    #: Divide each group's centred rewards by their standard deviation (false: Dr. GRPO).
    scale_rewards: bool = True
    #: Folder of the emotion-wheel tables (needed when ``rewards.ov`` > 0).
    wheels: str | None = None
    #: Clue records keyed by clip name (a MERR JSON: ``visual_prior_list``, ``audio_prior_list``,
    #: ``text``) for ``rewards.faithful``; ``None``: the data folder's merr_fine.json, else
    #: merr_coarse.json.
    clues: str | None = None
    rewards: RewardWeights = field(default_factory=RewardWeights)

    @property
    def clip_high(self) -> float:
        return self.clip_eps if self.clip_eps_high is None else self.clip_eps_high

    def validate(self) -> GrpoConfig:
        from emotion_llama.prompts import TASKS

        for key in ("group_size", "iterations", "max_new_tokens"):
            if getattr(self, key) < 1:
                raise TrainError(f"grpo.{key} must be >= 1, got {getattr(self, key)}")
        if self.group_size < 2:
            raise TrainError("grpo.group_size must be >= 2: advantages compare answers within a group")
        if self.beta < 0:
            raise TrainError(f"grpo.beta must be >= 0, got {self.beta}")
        if not 0 < self.clip_eps < 1 or self.clip_high <= 0:
            raise TrainError(f"grpo.clip_eps must be in (0, 1) and clip_eps_high > 0, got {self.clip_eps}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise TrainError(
                f"grpo.temperature must be > 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}"
            )
        for key, allowed in (
            ("answer_format", ANSWER_FORMATS),
            ("loss_norm", LOSS_NORMS),
            ("parser", PARSERS),
        ):
            if getattr(self, key) not in allowed:
                raise TrainError(
                    f"grpo.{key} must be one of {', '.join(allowed)}, not {getattr(self, key)!r}"
                )
        if self.task not in TASKS:
            raise TrainError(f"grpo.task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if self.layout not in (None, "training", "inference"):
            raise TrainError(f"grpo.layout must be training, inference or null, not {self.layout!r}")
        if self.max_think_words is not None and self.max_think_words < 1:
            raise TrainError(f"grpo.max_think_words must be >= 1 or null, got {self.max_think_words}")
        weights = self.rewards.as_dict()
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise TrainError(f"rewards: weights must be >= 0 and one of them > 0, got {weights}")
        if self.rewards.ov > 0 and not self.wheels:
            raise TrainError("rewards.ov > 0 needs grpo.wheels, the folder of the emotion-wheel tables")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resume_settings(self) -> dict[str, Any]:
        """What fixes the rollouts and the loss; a resume with other values is refused."""
        d = self.to_dict()
        d.pop("wheels")
        d.pop("clues")
        return d
