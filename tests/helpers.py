"""Helpers the tests import (conftest.py is for fixtures and hooks; importing it from a test
module is pytest's anti-pattern)."""

from __future__ import annotations

from pathlib import Path

#: The shared reference folder beside the checkout (emotion wheels, seeds).
SHARED = Path(__file__).resolve().parents[2] / "shared"


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


def tree_bytes(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``root`` as ``{relative path: bytes}``, leaving out the paths that start with
    one of ``skip`` (e.g. ``"shards/"``, ``"llm_cache.sqlite"``): two outputs are equal byte for byte
    when these dicts are."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not any(rel == s or rel.startswith(s) for s in skip):
            out[rel] = p.read_bytes()
    return out


def failure_rows(stderr: str) -> list[str]:
    """The rows of a command's failed-clips table (clip name and reason words), in order."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("│") and not line.startswith("│ video"):
            rows.append(" ".join(line.replace("│", " ").split()))
    return rows


def engine_config():
    """The tiny model's config with the training prompt layout, and its processor."""
    import dataclasses

    from emotion_llama.config import tiny_config
    from emotion_llama.model.processor import EmotionLlamaProcessor
    from emotion_llama.model.tokenizer import load_tokenizer

    base = tiny_config()
    cfg = dataclasses.replace(base, prompt=dataclasses.replace(base.prompt, layout="training"))
    return cfg, EmotionLlamaProcessor(load_tokenizer(cfg), cfg)


def engine_synth(folder: Path):
    """The tiny model's config (training prompt layout), 30 synthetic clips written to ``folder``
    (data seed 0, the project's layout) and a processor: the data of the engine tests."""
    from emotion_llama.data.synth import make_synthetic_dataset

    cfg, processor = engine_config()
    make_synthetic_dataset(folder, n=30, config=cfg, seed=0, layout="native")
    return folder, cfg, processor
