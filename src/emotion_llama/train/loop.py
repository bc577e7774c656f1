"""The training loop for the recipe of SPEC 4, on Hugging Face ``accelerate``.

The same code runs in one process and under ``accelerate launch`` / ``torchrun`` (DDP; FSDP and
DeepSpeed ZeRO-2/3 through an accelerate config file, see ``configs/accelerate/``; the project's
own FSDP2 with ``train.fsdp``, :mod:`~emotion_llama.train.fsdp`, and DeepSpeed with
``train.deepspeed``, :mod:`~emotion_llama.train.deepspeed_engine`). The parts:

* :mod:`~emotion_llama.train.config`: :class:`TrainConfig`, the settings read here.
* :mod:`~emotion_llama.train.engine`: the ``Accelerator`` (placement, wrapping, autocast, grad
  scaling and accumulation, reductions) and AdamW (weight decay on matrices only), the lr of
  :class:`~emotion_llama.train.schedule.Schedule` set on every optimiser step (``step`` =
  global optimiser step from 0).
* :mod:`~emotion_llama.train.sampler`: "epochs" of ``iters_per_epoch`` optimiser steps; each
  step consumes ``grad_accum`` global micro-batches of ``batch_size * W`` items (``W``
  processes) drawn from one infinite stream of shuffled passes, so one process with
  ``batch_size = B * W`` and ``W`` processes with ``batch_size = B`` see the same items per
  step. The loss is the token-weighted mean over the global micro-batch (each rank's mean is
  weighted by its share of answer tokens before the gradient average), so both set-ups follow
  the same gradients up to floating-point noise.
* :mod:`~emotion_llama.train.checkpointing`: :class:`TrainingProgress` and the checkpoints
  (``epoch_{k}/`` after each epoch, ``step_{N}/`` every ``save_every`` steps, the ``last`` and
  ``best`` pointers); resume (from ``last``) restores everything and continues, mid-epoch
  included, so an interrupted run ends with the weights of an uninterrupted one.
* :mod:`~emotion_llama.train.validate`: the validation loss after each epoch (and with
  ``eval_metrics`` emotion accuracy and weighted F1).
* :mod:`~emotion_llama.train.steplog`: ``out_dir/losses.jsonl`` and TensorBoard (or W&B) scalars
  under ``out_dir/logs``.

Only the main process writes checkpoints, pointers and logs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from emotion_llama.model.inputs import MultimodalInputs
from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.train.checkpointing import (
    BEST_FILE,
    LAST_FILE,
    STATE_FILE,
    Checkpointer,
    TrainingProgress,
    read_pointer,
    record_train_clips,
    restore_rng,
    seed_all,
    step_checkpoints,
)
from emotion_llama.train.config import LOG_WITH, LogWith, Precision, TrainConfig, TrainError
from emotion_llama.train.data import TrainDataset
from emotion_llama.train.engine import (
    autocast,
    check_engine,
    gradient_checkpointing_on,
    make_accelerator,
    precision_dtype,
    prepare,
    set_compiled_layers,
    set_gradient_checkpointing,
)
from emotion_llama.train.fsdp import set_gradient_sync
from emotion_llama.train.sampler import StreamSampler, stream_loader
from emotion_llama.train.steplog import LOGS_DIR, LOSSES_FILE, StepLog, read_losses
from emotion_llama.train.validate import (
    answer_tokens,
    chance_warning,
    emotion_metrics,
    scored_emotion_samples,
    validate_epoch,
    validation_loss,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = [
    # Re-exported from the modules the loop was split into, for the callers of before.
    "BEST_FILE",
    "LAST_FILE",
    "LOGS_DIR",
    "LOG_WITH",
    "LOSSES_FILE",
    "STATE_FILE",
    "VIT_CACHE_DIR",
    "LogWith",
    "Precision",
    "StreamSampler",
    "TrainConfig",
    "TrainError",
    "emotion_metrics",
    "gradient_checkpointing_on",
    "read_losses",
    "read_pointer",
    "step_checkpoints",
    "train",
    "validation_loss",
]

VIT_CACHE_DIR = "vit_cache"


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
    also_trained_on: Collection[str] = (),
) -> dict[str, Any]:
    """Train ``model`` in place; see the module docstring. ``stop_after_epoch`` ends the run after
    that epoch's checkpoint, ``stop_after_step`` after that many optimiser steps in total (with
    or without a checkpoint there: an interruption at a known point, for tests and jobs with a
    time budget). Returns ``{"losses", "val_losses", "val_metrics", "best_epoch", "step",
    "epochs_done", "main_process", "warnings"}`` (``warnings``: printed at the end, e.g. a final
    validation accuracy at chance). Writes ``out_dir/train_clips.txt``: the training clip names,
    with ``also_trained_on`` (the clips of the checkpoint it started from). With ``cfg.fsdp`` the
    model is sharded in place and stays so: the trained weights are in the checkpoints.
    """
    cfg.validate()
    if dataset.processor is not processor:
        raise TrainError("the dataset was built with another processor")
    dataset.modality_dropout = cfg.modality_dropout  # the training items only; validation sees all
    out = Path(cfg.out_dir)
    accelerator = make_accelerator(cfg, out)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        record_train_clips(out, [*also_trained_on, *(options[0].name for options in dataset.clips)])
    accelerator.wait_for_everyone()
    check_engine(cfg, accelerator)
    per_step = cfg.batch_size * world * cfg.grad_accum

    # -- state: fresh, or resumed from ``last`` (weights and progress now, optimiser below) --
    progress = TrainingProgress()
    checkpointer = Checkpointer(accelerator, out, cfg, model)
    saved = checkpointer.load_last(progress) if resume else None

    if cfg.gradient_checkpointing:
        set_gradient_checkpointing(model, True)
    if cfg.compile:
        set_compiled_layers(model, True)
    train_data, val_data = _training_data(model, dataset, val_dataset, cfg, accelerator)

    engine_model, optimizer = prepare(accelerator, model, cfg)
    checkpointer.attach(engine_model, optimizer)
    if saved is not None and main:
        print(
            f"resumed from {checkpointer.resumed_from} at epoch {progress.epoch}, step {progress.step}",
            flush=True,
        )
    log = StepLog(
        accelerator, out, cfg, progress.step if saved is not None else None, items_per_step=per_step
    )

    loader = stream_loader(train_data, cfg, progress.position, rank=rank, world_size=world)
    # The iterator is made before the RNG is set: making it draws a seed from torch's RNG, and
    # a fresh and a resumed run must then continue from the same RNG state.
    batches: Iterator[MultimodalInputs] = iter(loader)
    if saved is not None:
        restore_rng(saved, rank)
    else:
        # Seeded here, not by the caller, so that a resumed run and a fresh one share one stream.
        seed_all(cfg.seed)

    _train_mode(engine_model, model)
    log.restart_rate()
    try:
        while progress.epoch < cfg.epochs:
            t0 = time.perf_counter()
            lr = cfg.schedule.lr(progress.step)
            loss, samples, tokens = _optimizer_step(
                accelerator, engine_model, optimizer, batches, cfg, progress.step, lr
            )
            log.step(progress.step, progress.epoch, loss, lr, samples, tokens, time.perf_counter() - t0)
            progress.record_step(loss, per_step)

            epoch_end = progress.at_epoch_end(cfg.iters_per_epoch)
            if epoch_end:
                progress.close_epoch_loss(cfg.iters_per_epoch)
                if val_data is not None and val_dataset is not None:
                    val, found = validate_epoch(
                        accelerator, engine_model, processor, val_data, val_dataset, cfg, progress.epoch
                    )
                    progress.record_validation(val, found)
                    log.validation(progress.step - 1, val, found)
                    _train_mode(engine_model, model)
                progress.finish_epoch()
                checkpointer.save(progress, "epoch")
                log.restart_rate()
            elif cfg.save_every is not None and progress.step % cfg.save_every == 0:
                checkpointer.save(progress, "step")

            if _should_stop(progress, epoch_end, stop_after_epoch, stop_after_step):
                break
    finally:
        log.close()
        # Leave the caller's model as it came: no mixed-precision forward wrapper, no checkpointing.
        accelerator.unwrap_model(engine_model, keep_fp32_wrapper=False)
        if cfg.gradient_checkpointing:
            set_gradient_checkpointing(model, False)
        if cfg.compile:
            set_compiled_layers(model, False)
    summary = progress.summary(main)
    summary["warnings"] = _end_of_run_warnings(progress, cfg, val_dataset) if main else []
    return summary


# -- the steps of train() ------------------------------------------------------------------------
def _end_of_run_warnings(
    progress: TrainingProgress, cfg: TrainConfig, val_dataset: TrainDataset | None
) -> list[str]:
    """Printed when a run that went all its epochs ends: the validation accuracy at chance."""
    if progress.epoch < cfg.epochs or val_dataset is None:
        return []
    gold = {s.target.strip().lower() for s in scored_emotion_samples(val_dataset, cfg.eval_max_clips)}
    found = chance_warning(progress.val_metrics, len(gold), cfg)
    if found is None:
        return []
    print(f"warning: {found}", flush=True)
    return [found]


def _training_data(
    model: EmotionLlama,
    dataset: TrainDataset,
    val_dataset: TrainDataset | None,
    cfg: TrainConfig,
    accelerator: Accelerator,
) -> tuple[Any, Any]:
    """The datasets the loop reads: as given, or with ``cache_vit`` views that carry the frozen
    ViT's cached output (computed now where missing, clips shared out over the processes)."""
    if not cfg.cache_vit:
        return dataset, val_dataset
    from emotion_llama.train.vit_cache import CachedVisionDataset, build_vit_cache

    device, main = accelerator.device, accelerator.is_main_process
    cache, stats = build_vit_cache(
        model.global_encoder.to(device),
        [d for d in (dataset, val_dataset) if d is not None],
        Path(cfg.out_dir) / VIT_CACHE_DIR,
        dtype=precision_dtype(cfg),
        device=device,
        autocast=lambda: autocast(cfg, device),
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        show_progress=main,
    )
    accelerator.wait_for_everyone()
    if main:
        print(f"ViT cache {cache.folder}: {stats.built} computed, {stats.reused} reused (rank 0)", flush=True)
    val_data = CachedVisionDataset(val_dataset, cache) if val_dataset is not None else None
    return CachedVisionDataset(dataset, cache), val_data


def _train_mode(engine_model: Any, model: EmotionLlama) -> None:
    engine_model.train()
    # The frozen ViT stays in inference mode, as in the authors' code.
    model.global_encoder.eval()


def _optimizer_step(
    accelerator: Accelerator,
    engine_model: Any,
    optimizer: Any,
    batches: Iterator[MultimodalInputs],
    cfg: TrainConfig,
    step: int,
    lr: float,
) -> tuple[float, float, float]:
    """One optimiser step at ``lr`` over ``grad_accum`` micro-batches: the step's loss (mean of
    the micro-batches' global token means) and the samples and tokens it read, all processes."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    step_loss, samples, tokens = 0.0, 0.0, 0.0
    for micro in range(cfg.grad_accum):
        batch = next(batches).to(accelerator.device, non_blocking=True)
        if cfg.fsdp:
            # accelerate syncs a DDP model's gradients on the last micro-batch only; FSDP2 is told.
            set_gradient_sync(engine_model, micro == cfg.grad_accum - 1)
        # The project's DeepSpeed engine scales, reduces, accumulates and steps by itself.
        sync = contextlib.nullcontext() if cfg.deepspeed else accelerator.accumulate(engine_model)
        with sync:
            with accelerator.autocast():
                loss = engine_model(**batch.as_kwargs()).loss
            value, objective, n_samples, n_tokens = _global_loss(accelerator, loss, batch)
            if not math.isfinite(value) and cfg.precision != "fp16":
                raise TrainError(f"loss is {value} at step {step}; lower the lr")
            if cfg.deepspeed:
                engine_model.backward(objective)
                engine_model.step()
            else:
                accelerator.backward(objective)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        step_loss += value / cfg.grad_accum
        samples += n_samples
        tokens += n_tokens
    return step_loss, samples, tokens


def _global_loss(
    accelerator: Accelerator, loss: torch.Tensor, batch: MultimodalInputs
) -> tuple[float, torch.Tensor, float, float]:
    """The micro-batch's token-mean loss over all processes, the objective to back-propagate,
    and the samples and tokens of the global micro-batch."""
    assert batch.labels is not None
    n_local = answer_tokens(batch.labels)
    world = accelerator.num_processes
    if world == 1:
        return loss.item(), loss, float(batch.labels.shape[0]), float(batch.attention_mask.sum())
    local = [
        float(loss.detach()) * n_local,
        n_local,
        batch.attention_mask.sum().item(),
        batch.labels.shape[0],
    ]
    sums = accelerator.reduce(torch.tensor(local, dtype=torch.float64, device=accelerator.device))
    n_global = max(float(sums[1]), 1.0)
    # DDP averages gradients over ranks: weighting each rank's mean by its token share makes that
    # average the global token mean's gradient.
    objective = loss * (n_local * world / n_global)
    return float(sums[0]) / n_global, objective, float(sums[3]), float(sums[2])


def _should_stop(
    progress: TrainingProgress, epoch_end: bool, stop_after_epoch: int | None, stop_after_step: int | None
) -> bool:
    """Whether to end the run now, after this step's checkpoint (if any)."""
    if stop_after_step is not None and progress.step >= stop_after_step:
        return True
    return epoch_end and stop_after_epoch is not None and progress.epoch - 1 >= stop_after_epoch
