"""Shared fixtures. Everything runs offline: the hub is never asked."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


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


def random_media(config, batch: int, seed: int = 0) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    v, f = config.vision, config.features
    return {
        "pixel_values": torch.randn(batch, 3, v.image_size, v.image_size, generator=g),
        "local_feats": torch.randn(batch, f.local_dim, generator=g),
        "temporal_feats": torch.randn(batch, f.temporal_dim, generator=g),
        "audio_feats": torch.randn(batch, f.audio_dim, generator=g),
    }
