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
