"""Exceptions with messages a user can act on. No heavy imports here."""

from __future__ import annotations

from pathlib import Path


class EmotionLlamaError(Exception):
    """Base class: every error the project raises on bad input derives from it."""


class ConfigError(EmotionLlamaError, ValueError):
    """A configuration is inconsistent or cannot be read."""


class CheckpointError(EmotionLlamaError, ValueError):
    """A checkpoint file is missing keys, has wrong shapes, or is not a checkpoint."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class FeatureCountError(EmotionLlamaError, ValueError):
    """The number of placeholder positions does not match the number of feature vectors."""


class MediaError(EmotionLlamaError):
    """A video, audio or image file cannot be read (missing, empty, not media, truncated...)."""
