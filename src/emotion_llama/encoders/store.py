"""Pre-extracted features in the authors' released layout (SPEC 5).

One ``(1024,)`` ``.npy`` per clip and modality, in folders beside the label list::

    HL-UTT/{name}.npy        audio    (HuBERT-large, mean over time)
    mae_340_UTT/{name}.npy   local    (MAE ViT-L on face crops, mean over frames)
    maeV_399_UTT/{name}.npy  temporal (VideoMAE ViT-L on 16 face frames)

Users hold these released features; reading this layout directly means their downloads work as
they are. A missing or malformed file raises :class:`FeatureError` naming it; it is never
replaced by zeros.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_llama.errors import EmotionLlamaError

AUTHORS_DIRS = {"audio": "HL-UTT", "local": "mae_340_UTT", "temporal": "maeV_399_UTT"}
MODALITIES = ("local", "temporal", "audio")


class FeatureError(EmotionLlamaError):
    """A feature file is missing or unreadable."""


@dataclass(frozen=True)
class ClipFeatures:
    local: np.ndarray
    temporal: np.ndarray
    audio: np.ndarray


class AuthorsLayoutStore:
    """Read and write ``{root}/{HL-UTT,mae_340_UTT,maeV_399_UTT}/{name}.npy``."""

    def __init__(self, root: str | Path, dims: dict[str, int] | None = None) -> None:
        self.root = Path(root)
        self.dims = dims

    def path(self, modality: str, name: str) -> Path:
        return self.root / AUTHORS_DIRS[modality] / f"{name}.npy"

    def has(self, name: str) -> bool:
        return all(self.path(m, name).is_file() for m in MODALITIES)

    def read(self, name: str) -> ClipFeatures:
        arrays = {}
        for m in MODALITIES:
            p = self.path(m, name)
            if not p.is_file():
                raise FeatureError(f"{p}: missing {m} feature for clip {name!r}")
            try:
                a = np.load(p, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise FeatureError(f"{p}: not a readable .npy file ({exc})") from None
            a = np.asarray(a, dtype=np.float32).reshape(-1)
            want = None if self.dims is None else self.dims.get(m)
            if want is not None and a.shape[0] != want:
                raise FeatureError(f"{p}: {m} feature has {a.shape[0]} values, the model expects {want}")
            arrays[m] = a
        return ClipFeatures(**arrays)

    def write(self, name: str, features: ClipFeatures) -> None:
        """Atomic per file: a crash never leaves a truncated ``.npy`` under its final name."""
        for m in MODALITIES:
            p = self.path(m, name)
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{name}.", suffix=".npy")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.asarray(getattr(features, m), dtype=np.float32).reshape(-1))
            os.replace(tmp, p)

    def names(self) -> list[str]:
        """Clips that have all three features."""
        folder = self.root / AUTHORS_DIRS["audio"]
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.npy") if self.has(p.stem))
