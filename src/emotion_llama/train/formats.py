"""Training data in every supported format, behind one entry point.

Recipes call::

    open_training_data(fmt, path, processor, *, split=None, tasks=None, fold=None, features=None,
                       subtitles=None, min_confidence=None, seed=0, layout="training") -> TrainDataset
    open_training_mix(specs, processor, *, seed=0, layout="training") -> TrainDataset

``processor`` is the model's :class:`~emotion_llama.model.processor.EmotionLlamaProcessor` (its
``config`` gives the feature dimensions). :func:`read_training_data` does the reading without a
processor and returns ``(samples, report)``. Every format yields the same
:class:`~emotion_llama.data.samples.TrainSample` s; the dataset's :attr:`TrainDataset.summary`
says what was kept and dropped. The readers live in :mod:`emotion_llama.data.formats`, one module
per format; their functions are re-exported here.

Formats (``fmt``), what ``path`` is, the tasks they give and their options:

- ``folder``: the project's dataset folder
  (:func:`~emotion_llama.data.formats.folder.read_training_folder`); emotion, reason, reason_v2;
  ``split`` (a key of ``split.json``).
- ``mer2023``, ``mer2024`` (the noise track reads the same): a label list or the folder holding
  it, NCEV (``labels.txt``, ``*_NCEV.txt``) or CSV (MER2024's ``label-disdim.csv``); emotion;
  ``split`` (``split.json`` beside the list), ``subtitles``
  (:func:`~emotion_llama.data.formats.mer.read_mer_labels`).
- ``pseudo``: a pseudo-label list (:func:`~emotion_llama.data.formats.pseudo.read_pseudo_labels`);
  emotion; ``min_confidence``, ``subtitles``.
- ``dfew``: the DFEW folder with its ``EmoLabel_DataSplit`` split files, or the evaluation
  layout ``fold1/`` .. ``fold5/`` (:func:`~emotion_llama.data.formats.dfew.read_dfew_fold`);
  emotion (7 labels); ``fold`` 1-5 (required), ``split`` ``train`` (default) or ``test``.
- ``jsonl``: a JSONL file, one clip per line (:func:`~emotion_llama.data.formats.jsonl.read_jsonl`);
  the tasks its lines give.
- ``manifest``: a manifest CSV/JSONL (docs/manifest.md;
  :func:`~emotion_llama.data.formats.manifest.read_manifest_samples`) whose clips were extracted
  (``extract MANIFEST --out FEATURES``); emotion; ``split`` (the rows' ``split`` column),
  ``video_root``.

``features`` is the feature store (the authors' layout or the project's); by default the
folder holding the labels (the authors' features sit beside their label lists, SPEC 5).
``subtitles`` is a ``name,sentence`` CSV; by default ``subtitles.csv`` or MER2024's
``label-transcription.csv`` beside the labels. DFEW has no subtitles. ``tasks`` keeps only those
tasks (default: the format's own; an emotion-only format refuses others).

Label words are normalised as every target (SPEC 2.3: lower case, ``. ! " ( ) * # : ; ~`` to
spaces); words outside the nine labels are kept (open vocabulary). A clip whose features or
frame are missing is reported once and skipped, never zero-filled
(:class:`~emotion_llama.data.formats.clips.ClipResolver`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.data.formats.dfew import DFEW_INSTRUCTION, read_dfew_fold
from emotion_llama.data.formats.folder import read_training_folder
from emotion_llama.data.formats.jsonl import JSONL_KEYS, read_jsonl
from emotion_llama.data.formats.manifest import read_manifest_samples
from emotion_llama.data.formats.mer import read_mer_labels
from emotion_llama.data.formats.pseudo import (
    PSEUDO_CONFIDENCE_COLUMNS,
    PSEUDO_LABEL_COLUMNS,
    PSEUDO_NAME_COLUMNS,
    read_pseudo_labels,
)
from emotion_llama.data.samples import ReadReport, TrainDataError, TrainSample
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.prompts import TASKS
from emotion_llama.train.data import TrainDataset

__all__ = [
    "DEFAULT_TASKS",
    "DFEW_INSTRUCTION",
    "EMOTION_ONLY",
    "FORMATS",
    "JSONL_KEYS",
    "PSEUDO_CONFIDENCE_COLUMNS",
    "PSEUDO_LABEL_COLUMNS",
    "PSEUDO_NAME_COLUMNS",
    "DataSpec",
    "open_training_data",
    "open_training_mix",
    "read_dfew_fold",
    "read_jsonl",
    "read_mer_labels",
    "read_pseudo_labels",
    "read_training_data",
    "read_training_folder",
]

log = logging.getLogger(__name__)


FORMATS: tuple[str, ...] = ("folder", "jsonl", "mer2023", "mer2024", "pseudo", "dfew", "manifest")


#: Formats whose only targets are label words.
EMOTION_ONLY: frozenset[str] = frozenset({"manifest", "mer2023", "mer2024", "pseudo", "dfew"})


DEFAULT_TASKS: dict[str, tuple[str, ...] | None] = {
    "folder": ("emotion", "reason"),
    "jsonl": None,  # every task the lines have
    "manifest": ("emotion",),
    "mer2023": ("emotion",),
    "mer2024": ("emotion",),
    "pseudo": ("emotion",),
    "dfew": ("emotion",),
}


@dataclass(frozen=True)
class DataSpec:
    """One training source: the arguments of :func:`open_training_data` without the processor.
    ``from_mapping`` reads a recipe's dict (``format`` or ``fmt``)."""

    format: str
    path: str | Path
    split: str | None = None
    tasks: tuple[str, ...] | None = None
    fold: int | None = None
    features: str | Path | None = None
    subtitles: str | Path | None = None
    min_confidence: float | None = None
    #: Where a manifest's relative video paths (and NAME.* videos) are; default its folder.
    video_root: str | Path | None = None

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> DataSpec:
        d = dict(spec)
        if "fmt" in d:
            if "format" in d:
                raise TrainDataError("give the data format as 'format' or 'fmt', not both")
            d["format"] = d.pop("fmt")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainDataError(
                f"unknown data option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        for key in ("format", "path"):
            if d.get(key) is None:
                raise TrainDataError(f"a data source needs '{key}' (got {dict(spec)!r})")
        if d.get("tasks") is not None:
            tasks = d["tasks"]
            d["tasks"] = (tasks,) if isinstance(tasks, str) else tuple(tasks)
        return cls(**d)


def open_training_data(
    fmt: str,
    path: str | Path,
    processor: EmotionLlamaProcessor,
    *,
    split: str | None = None,
    tasks: Sequence[str] | None = None,
    fold: int | None = None,
    features: str | Path | None = None,
    subtitles: str | Path | None = None,
    min_confidence: float | None = None,
    seed: int = 0,
    layout: str = "training",
) -> TrainDataset:
    """A :class:`TrainDataset` from one source in format ``fmt`` (see the module docstring).

    Raises :class:`TrainDataError` for an unknown format (naming the valid ones), an option the
    format does not take, or a source that yields no sample; a malformed file raises an error
    naming the file and line.
    """
    spec = DataSpec(
        fmt,
        path,
        split=split,
        tasks=None if tasks is None else tuple(tasks),
        fold=fold,
        features=features,
        subtitles=subtitles,
        min_confidence=min_confidence,
    )
    return open_training_mix([spec], processor, seed=seed, layout=layout)


def open_training_mix(
    specs: Sequence[DataSpec | Mapping[str, Any]],
    processor: EmotionLlamaProcessor,
    *,
    seed: int = 0,
    layout: str = "training",
) -> TrainDataset:
    """Several sources concatenated into one :class:`TrainDataset` (stage 1 with pseudo-labels:
    MERR coarse plus a pseudo-label list). Samples of the same clip name from several sources
    become one clip whose item draws among all of them; one name with two different frames is
    an error (two different clips)."""
    if not specs:
        raise TrainDataError("no data sources given")
    samples: list[TrainSample] = []
    reports: list[ReadReport] = []
    frames: dict[str, tuple[str, str]] = {}
    for raw in specs:
        spec = raw if isinstance(raw, DataSpec) else DataSpec.from_mapping(raw)
        got, report = read_training_data(spec, processor.config)
        for s in got:
            where = str(s.frame) if isinstance(s.frame, Path) else f"<array of {s.name}>"
            seen = frames.setdefault(s.name, (where, report.source))
            if seen[0] != where:
                raise TrainDataError(
                    f"clip name {s.name!r} means two clips: frame {seen[0]} in {seen[1]} and "
                    f"{where} in {report.source}; rename one of them"
                )
        samples.extend(got)
        reports.append(report)
    if not samples:
        raise TrainDataError("no training samples: " + "; ".join(r.text() for r in reports))
    dataset = TrainDataset(samples, processor, seed=seed, layout=layout, reports=reports)
    log.info("training data: %s", dataset.summary)
    return dataset


def read_training_data(spec: DataSpec, config: EmotionLlamaConfig) -> tuple[list[TrainSample], ReadReport]:
    """The samples of one source and the report of what was kept and dropped."""
    fmt = spec.format
    if fmt not in FORMATS:
        raise TrainDataError(f"unknown data format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    tasks = _check_tasks(fmt, spec.tasks)
    _check_options(spec)
    path = Path(spec.path)
    report = ReadReport(f"{fmt} {path}")
    samples: list[TrainSample]
    if fmt == "folder":
        samples = read_training_folder(
            path,
            config,
            tasks=tasks or ("emotion", "reason"),
            split=spec.split,
            features=spec.features,
            report=report,
        )
    elif fmt in ("mer2023", "mer2024"):
        samples = read_mer_labels(
            path, config, features=spec.features, subtitles=spec.subtitles, split=spec.split, report=report
        )
    elif fmt == "pseudo":
        samples = read_pseudo_labels(
            path,
            config,
            features=spec.features,
            subtitles=spec.subtitles,
            min_confidence=spec.min_confidence,
            report=report,
        )
    elif fmt == "dfew":
        assert spec.fold is not None  # checked above
        samples = read_dfew_fold(
            path, config, fold=spec.fold, split=spec.split or "train", features=spec.features, report=report
        )
    elif fmt == "manifest":
        samples = read_manifest_samples(
            path, config, features=spec.features, split=spec.split, video_root=spec.video_root, report=report
        )
    else:
        samples = read_jsonl(path, config, features=spec.features, tasks=tasks, report=report)
    return samples, report


def _check_tasks(fmt: str, tasks: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if tasks is None:
        return DEFAULT_TASKS[fmt]
    if not tasks:
        raise TrainDataError("tasks is empty")
    for task in tasks:
        if task not in TASKS:
            raise TrainDataError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if fmt in EMOTION_ONLY and set(tasks) != {"emotion"}:
        raise TrainDataError(f"format {fmt!r} has only emotion targets (label words), not {', '.join(tasks)}")
    return tasks


def _check_options(spec: DataSpec) -> None:
    fmt = spec.format
    if spec.fold is not None and fmt != "dfew":
        raise TrainDataError(f"'fold' is for the dfew format, not {fmt!r}")
    if fmt == "dfew":
        if spec.fold is None:
            raise TrainDataError("the dfew format needs 'fold' (1-5)")
        if isinstance(spec.fold, bool) or not isinstance(spec.fold, int) or not 1 <= spec.fold <= 5:
            raise TrainDataError(f"DFEW fold must be 1..5, not {spec.fold!r}")
        if spec.split not in (None, "train", "test"):
            raise TrainDataError(f"DFEW split must be 'train' or 'test', not {spec.split!r}")
    if spec.min_confidence is not None and fmt != "pseudo":
        raise TrainDataError(f"'min_confidence' is for the pseudo format, not {fmt!r}")
    if spec.split is not None and fmt in ("pseudo", "jsonl"):
        raise TrainDataError(f"format {fmt!r} has no splits; give one file per split")
    if spec.video_root is not None and fmt != "manifest":
        raise TrainDataError(f"'video_root' is for the manifest format, not {fmt!r}")
    if spec.subtitles is not None and fmt in ("folder", "dfew", "jsonl", "manifest"):
        where = "the folder's subtitles.csv" if fmt == "folder" else "none" if fmt == "dfew" else "each line"
        raise TrainDataError(f"'subtitles' is not an option of format {fmt!r} (subtitles: {where})")
