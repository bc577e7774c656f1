"""Validation during training: the answer-token loss on the validation set, and (with
``train.eval_metrics``) label accuracy and weighted F1 of the emotion task from greedy answers."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.model.processor import IGNORE_INDEX, EmotionLlamaProcessor
from emotion_llama.train.config import TrainConfig
from emotion_llama.train.data import TrainDataset
from emotion_llama.train.engine import autocast

if TYPE_CHECKING:
    from accelerate import Accelerator

    from emotion_llama.train.vit_cache import CachedVisionDataset


def answer_tokens(labels: torch.Tensor) -> int:
    """The tokens the loss averages over: labels after the shift, -100 excluded."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


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
        batch = dataset.collate([dataset[(k, 0)] for k in keys or [0]]).to(device, non_blocking=True)
        # Weighted by answer tokens (minus the shift), so the mean does not depend on batching.
        n = answer_tokens(batch["labels"]) if keys else 0
        with autocast(cfg, device):
            loss = model(**batch.as_kwargs()).loss
        if n:
            total += float(loss) * n
            tokens += n
    if world > 1 and accelerator is not None:
        sums = accelerator.reduce(torch.tensor([total, float(tokens)], dtype=torch.float64, device=device))
        total, tokens = float(sums[0]), int(sums[1])
    model.train(was_training)
    return total / max(tokens, 1)


def scored_emotion_samples(dataset: TrainDataset, max_clips: int) -> list[Any]:
    """The emotion samples :func:`emotion_metrics` scores: the first ``max_clips`` in name order."""
    return [s for options in dataset.clips for s in options if s.task == "emotion"][:max_clips]


#: An accuracy at most this far above chance (1 / number of labels) counts as not learned.
CHANCE_MARGIN = 0.05


def chance_warning(val_metrics: list[dict[str, Any]], labels: int, cfg: TrainConfig) -> str | None:
    """A warning when the last validated epoch's emotion accuracy is at or below chance (one
    in ``labels``, plus :data:`CHANCE_MARGIN`): the run has not learned, and says how long it
    was; ``None`` otherwise (or without metrics, or with fewer than two labels)."""
    if not val_metrics or labels < 2:
        return None
    accuracy = float(val_metrics[-1]["accuracy"])
    chance = 1.0 / labels
    if accuracy > chance + CHANCE_MARGIN:
        return None
    steps = cfg.epochs * cfg.iters_per_epoch
    return (
        f"the final validation emotion accuracy {accuracy:.3f} is at chance (1 in {labels} labels = "
        f"{chance:.3f}): the model has not learned. The recipe ran {steps} optimiser steps "
        f"(train.epochs={cfg.epochs} x train.iters_per_epoch={cfg.iters_per_epoch}, "
        f"schedule.init_lr={cfg.schedule.init_lr:g}); train longer (raise train.iters_per_epoch or "
        "train.epochs) or check the data before evaluating this checkpoint"
    )


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

    samples = scored_emotion_samples(dataset, max_clips)
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


def validate_epoch(
    accelerator: Accelerator,
    engine_model: Any,
    processor: EmotionLlamaProcessor,
    val_data: TrainDataset | CachedVisionDataset,
    val_dataset: TrainDataset,
    cfg: TrainConfig,
    epoch: int,
) -> tuple[float, dict[str, float] | None]:
    """The validation loss of the epoch (all processes) and, with ``eval_metrics``, the emotion
    metrics (main process only; ``None`` elsewhere). ``val_data`` is what the loss reads (the
    ViT-cached view under ``cache_vit``), ``val_dataset`` the plain set generation reads."""
    main = accelerator.is_main_process
    val = validation_loss(engine_model, val_data, cfg, accelerator.device, accelerator=accelerator)
    if main:
        print(f"epoch {epoch} validation loss {val:.4f}", flush=True)
    found = None
    if cfg.eval_metrics:
        if main:
            with accelerator.autocast():
                found = emotion_metrics(
                    accelerator.unwrap_model(engine_model),
                    processor,
                    val_dataset,
                    max_clips=cfg.eval_max_clips,
                )
        accelerator.wait_for_everyone()
        if found is not None:
            print(
                f"epoch {epoch} emotion accuracy {found['accuracy']:.4f} "
                f"weighted F1 {found['weighted_f1']:.4f}",
                flush=True,
            )
    return val, found
