"""The types every reader shares: benchmark clips, training samples, what a reader kept.

:class:`Clip` is one clip of a benchmark list (:mod:`emotion_llama.data.formats.lists`) with its
gold label or reference; :class:`TrainSample` one (clip, task) pair a training reader yields;
:class:`ReadReport` what a training reader kept and dropped (:func:`finish_report` counts the
samples into it). :class:`DataError` is a malformed benchmark file (the message names the file
and line), :class:`TrainDataError` a training source that cannot be used as given.

No model here: these are plain dataclasses, read by the benchmark and training readers alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotion_llama.errors import EmotionLlamaError

if TYPE_CHECKING:
    import numpy as np

    from emotion_llama.encoders.store import ClipFeatures

log = logging.getLogger(__name__)


class DataError(EmotionLlamaError):
    """A benchmark file is malformed; the message names the file and line."""


def finite_number(text: str, what: str) -> float:
    """``text`` as a finite number, else :class:`DataError` ``"{what} 'text' is not a (finite)
    number"`` (``what`` says where: ``"labels.txt:3: valence"``)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{what} {text!r} is not a finite number")
    return value


@dataclass(frozen=True)
class Clip:
    name: str
    subtitle: str = ""
    label: str | None = None
    valence: float | None = None
    reference: str | list[str] | None = None
    fold: str | None = None


class TrainDataError(EmotionLlamaError, ValueError):
    """A training folder or dataset cannot be used as given."""


@dataclass(frozen=True)
class TrainSample:
    """One (clip, task) pair with its target. Reasoning targets are kept raw; label words are
    normalised when read (the processor normalises every target again, which changes nothing).
    ``instruction`` fixes the instruction (DFEW's 7-label wording); ``None`` draws it from the
    task's pool."""

    name: str
    subtitle: str
    task: str
    target: str
    frame: Path | np.ndarray
    features: ClipFeatures
    instruction: str | None = None


#: At most this many skipped clips are logged one by one per source; the rest go to the debug log
#: and a count (every one is still in :attr:`ReadReport.skipped`).
LOG_SKIPPED = 20


@dataclass
class ReadReport:
    """What a reader kept and dropped, for logs and :attr:`TrainDataset.summary`.

    ``skipped`` holds one line per clip whose features or frame could not be read (the clip name
    and the path tried); ``filtered`` counts clips left out on purpose (below ``min_confidence``);
    ``unlabelled`` counts listed clips without a target; ``notes`` holds other remarks (a
    ``min_confidence`` that could not apply).
    """

    source: str
    samples: int = 0
    clips: int = 0
    skipped: list[str] = field(default_factory=list)
    filtered: int = 0
    unlabelled: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "samples": self.samples,
            "clips": self.clips,
            "skipped": len(self.skipped),
            "filtered": self.filtered,
            "unlabelled": self.unlabelled,
            "notes": list(self.notes),
        }

    def text(self) -> str:
        extra = f", {self.filtered} filtered" if self.filtered else ""
        extra += f", {self.unlabelled} without a target" if self.unlabelled else ""
        return (
            f"{self.source}: {self.samples} samples from {self.clips} clips, "
            f"{len(self.skipped)} skipped (missing features or frame){extra}"
        )


def finish_report(report: ReadReport, samples: Sequence[TrainSample]) -> None:
    """Count a reader's ``samples`` into ``report`` and log its summary line."""
    report.samples += len(samples)
    report.clips += len({s.name for s in samples})
    if len(report.skipped) > LOG_SKIPPED:
        log.warning(
            "%s: %d more clips skipped (see the report)", report.source, len(report.skipped) - LOG_SKIPPED
        )
    log.info("%s", report.text())
