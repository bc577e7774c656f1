"""The training loop: it learns (synthetic data), resumes exactly, applies the schedule, and
skips clips without features."""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from emotion_llama.config import EmotionLlamaConfig, tiny_config
from emotion_llama.data.formats.folder import read_training_folder
from emotion_llama.data.synth import make_synthetic_dataset
from emotion_llama.model.builder import build_model
from emotion_llama.model.checkpoint import trainable_state
from emotion_llama.model.generation import ClipInput, Generator
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.model.tokenizer import load_tokenizer
from emotion_llama.prompts import MER_LABELS, parse_label_robust
from emotion_llama.train.checkpointing import read_pointer
from emotion_llama.train.config import TrainConfig
from emotion_llama.train.data import TrainDataset
from emotion_llama.train.loop import train
from emotion_llama.train.schedule import Schedule
from emotion_llama.train.validate import validation_loss


def _config() -> EmotionLlamaConfig:
    # A model trained from scratch knows only the layout it was trained with, so generation
    # uses the training layout too (the released weights are the ones evaluated on the other).
    cfg = tiny_config()
    return dataclasses.replace(cfg, prompt=dataclasses.replace(cfg.prompt, layout="training"))


def _setup(folder: Path, n: int) -> tuple[EmotionLlamaConfig, EmotionLlamaProcessor]:
    cfg = _config()
    make_synthetic_dataset(folder, n=n, config=cfg, seed=0, layout="native")
    return cfg, EmotionLlamaProcessor(load_tokenizer(cfg), cfg)


@pytest.mark.slow
def test_learning_proof(tmp_path: Path, one_thread: None) -> None:
    data = tmp_path / "data"
    cfg, proc = _setup(data, 120)
    train_set = TrainDataset(read_training_folder(data, cfg, split="train"), proc, seed=0)
    test_samples = read_training_folder(data, cfg, split="test")
    reason_test = TrainDataset([s for s in test_samples if s.task == "reason"], proc, seed=1)
    emotion_test = [s for s in test_samples if s.task == "emotion"]
    assert len(train_set) == 84 and len(emotion_test) == 18

    model = build_model(cfg)
    steps = 1500
    # Per-iteration cosine (iters_per_epoch=None): the lr falls smoothly over the short run.
    schedule = Schedule("warmup_cosine", 3e-2, 3e-3, 3e-3, steps // 10, steps, None)
    tc = TrainConfig(
        schedule=schedule, epochs=2, iters_per_epoch=steps // 2, batch_size=4, seed=0,
        out_dir=tmp_path / "run", log_every=250,
    )  # fmt: skip
    before = validation_loss(model, reason_test, tc)
    t0 = time.perf_counter()
    summary = train(model, proc, train_set, tc)
    elapsed = time.perf_counter() - t0
    after = validation_loss(model, reason_test, tc)

    from emotion_llama.media.frames import read_frame

    gen = Generator(model, proc, task="emotion", max_new_tokens=4)
    answers = gen([ClipInput(s.subtitle, read_frame(Path(str(s.frame))), s.features) for s in emotion_test])
    correct = sum(
        parse_label_robust(a, MER_LABELS) == s.target for a, s in zip(answers, emotion_test, strict=True)
    )
    accuracy = correct / len(emotion_test)
    print(f"accuracy {accuracy:.3f}, reason loss {before:.4f} -> {after:.4f}, {elapsed:.1f}s, {summary}")
    assert accuracy >= 0.9, answers
    assert after < before - 0.3
    assert summary["losses"][1] < summary["losses"][0]


def _resume_run(data: Path, out: Path, cfg: EmotionLlamaConfig, proc: EmotionLlamaProcessor,
                **kwargs: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:  # fmt: skip
    train_set = TrainDataset(read_training_folder(data, cfg, split="train"), proc, seed=3)
    val_set = TrainDataset(read_training_folder(data, cfg, split="val"), proc, seed=4)
    model = build_model(cfg)  # seeded by the config: every call starts from the same weights
    tc = TrainConfig(
        schedule=Schedule("warmup_cosine", 5e-3, 1e-4, 1e-4, 2, 8, 4), epochs=2, iters_per_epoch=4,
        batch_size=2, grad_accum=2, seed=7, out_dir=out, log_every=100,
    )  # fmt: skip
    summary = train(model, proc, train_set, tc, val_dataset=val_set, **kwargs)
    return {k: v.clone() for k, v in trainable_state(model).items()}, summary


def test_resume_matches_uninterrupted_run(tmp_path: Path, one_thread: None) -> None:
    data = tmp_path / "data"
    cfg, proc = _setup(data, 30)
    full, full_summary = _resume_run(data, tmp_path / "a", cfg, proc)

    first, first_summary = _resume_run(data, tmp_path / "b", cfg, proc, stop_after_epoch=0)
    assert first_summary["epochs_done"] == 1
    assert read_pointer(tmp_path / "b") == {"dir": "epoch_0", "epoch": 0, "step": 4}
    # A "new process": the global RNGs hold something else until the resume restores them.
    random.seed(12345)
    torch.manual_seed(12345)
    resumed, summary = _resume_run(data, tmp_path / "b", cfg, proc)

    assert summary["step"] == full_summary["step"] == 8
    assert summary["losses"] == pytest.approx(full_summary["losses"], abs=1e-6)
    assert summary["val_losses"] == pytest.approx(full_summary["val_losses"], abs=1e-6)
    assert set(resumed) == set(full)
    # fp32, same RNG states and stream position: only op-order noise could differ, and none does.
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], atol=1e-6, rtol=0)
    # Training changed the weights at all (otherwise the comparison proves nothing).
    assert any(not torch.equal(first[k], full[k]) for k in full)
    for run in ("a", "b"):
        assert (tmp_path / run / "epoch_1" / "trainer_state.pt").is_file()
        assert (tmp_path / run / "epoch_1" / "model.safetensors").is_file()
        best = json.loads((tmp_path / run / "best").read_text())
        val = summary["val_losses"]
        assert best["epoch"] == min(range(len(val)), key=val.__getitem__) == summary["best_epoch"]


def test_applied_lr_follows_schedule(tmp_path: Path, one_thread: None) -> None:
    data = tmp_path / "data"
    cfg, proc = _setup(data, 12)
    train_set = TrainDataset(read_training_folder(data, cfg, tasks=("emotion",)), proc)
    schedule = Schedule("warmup_cosine", 1e-3, 1e-5, 1e-4, 3, 12, 4)
    seen: list[list[float]] = []

    def record(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        seen.append([g["lr"] for g in optimizer.param_groups])

    handle = register_optimizer_step_pre_hook(record)
    try:
        tc = TrainConfig(schedule=schedule, epochs=3, iters_per_epoch=4, out_dir=tmp_path / "run")
        train(build_model(cfg), proc, train_set, tc)
    finally:
        handle.remove()
    assert len(seen) == 12
    for step in (0, 1, 2, 3, 4, 7, 8, 11):
        assert seen[step] == [pytest.approx(schedule.lr(step), rel=1e-12)] * len(seen[step])
    assert seen[0][0] != seen[4][0] != seen[8][0]


def test_missing_feature_is_reported_once_and_skipped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg, proc = _setup(data, 12)
    names = json.loads((data / "split.json").read_text())["train"]
    victim = names[0]
    (data / "clips" / f"{victim}.npz").unlink()
    warnings: list[str] = []
    samples = read_training_folder(data, cfg, tasks=("emotion", "reason"), warnings=warnings)
    assert len(warnings) == 1 and victim in warnings[0]
    assert victim not in {s.name for s in samples}
    assert len(samples) == 2 * 11
    train_samples = read_training_folder(data, cfg, split="train", warnings=[])
    dataset = TrainDataset(train_samples, proc)
    assert victim not in dataset.names() and len(dataset) == len(names) - 1
    # No zero-filled stand-in: every feature read is the stored vector.
    assert all(float(s.features.local.__abs__().sum()) > 0 for s in samples)
