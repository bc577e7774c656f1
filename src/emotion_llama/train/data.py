"""Training data: a dataset folder (SPEC 5) -> samples -> processor-encoded, collated batches.

A folder in the project's format holds ``labels.txt`` (NCEV), ``subtitles.csv``,
``merr_coarse.json`` (``caption``, task ``reason``), ``merr_fine.json`` (``smp_reason_caption``,
task ``reason_v2``), optionally ``split.json``, and a feature store (native or the authors'
layout) with one frame per clip. :func:`read_training_folder` turns it into one
:class:`TrainSample` per (clip, task); :class:`TrainDataset` draws one task per clip and item, as
the authors' stage-1 dataset does (emotion or reason at random), and encodes it.

Other formats (MER2023/MER2024 label lists, pseudo-labels, DFEW folds, JSONL) and the entry
point recipes use, :func:`emotion_llama.train.formats.open_training_data`, live in
:mod:`emotion_llama.train.formats`; every reader goes through :class:`ClipResolver`, so a clip
whose features or frame are missing is reported once (a :class:`ReadReport` line, logged) and
skipped, never zero-filled.

Determinism: every random choice of an item (task, instruction) comes from a
``random.Random`` seeded by ``(seed, index, draw)``, where ``draw`` is the global position of the
item in the training stream. An interrupted run that restarts at the same position therefore
sees exactly the same samples, whatever the worker processes did before.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.data.benchmarks import find_frame_source, find_labels_file, read_ncev, read_subtitles
from emotion_llama.encoders.store import ClipFeatures, FeatureError, FeatureStore, open_store
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.inputs import MultimodalInputs
from emotion_llama.model.processor import EmotionLlamaProcessor, EncodedSample
from emotion_llama.prompts import TASKS, pick_instruction

log = logging.getLogger(__name__)

#: Where each task's target comes from: (file, field); ``None`` means the label list.
TARGET_SOURCES: dict[str, tuple[str, str] | None] = {
    "emotion": None,
    "reason": ("merr_coarse.json", "caption"),
    "reason_v2": ("merr_fine.json", "smp_reason_caption"),
}


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


class ClipResolver:
    """Features and frame of each clip from one store, read once per clip.

    A clip whose features are missing or unreadable, or that has no frame, is reported once: a
    line naming the clip and the path tried goes to ``report.skipped`` (and ``warnings`` when
    given) and to the log; :meth:`get` then returns ``None`` for it, every time. Frames are
    looked for as the store names them, then as ``first_frames/``, ``frames/`` or ``video/``
    files in the store and in ``frame_roots``.
    """

    def __init__(
        self,
        store: FeatureStore,
        report: ReadReport,
        *,
        frame_roots: Iterable[Path] = (),
        warnings: list[str] | None = None,
    ) -> None:
        self.store = store
        self.report = report
        self.frame_roots = [store.root, *(Path(r) for r in frame_roots if Path(r) != store.root)]
        self.warnings = warnings
        self._cache: dict[str, tuple[ClipFeatures, Path] | None] = {}

    def has(self, name: str) -> bool:
        """Whether the store holds vectors for ``name`` (no report, no caching)."""
        return self.store.has(name)

    def get(self, name: str, frame: Path | None = None) -> tuple[ClipFeatures, Path] | None:
        """``(features, frame path)``, or ``None`` for a skipped clip. ``frame`` is an explicit
        frame file, used before the store's."""
        if name in self._cache:
            return self._cache[name]
        result: tuple[ClipFeatures, Path] | None = None
        try:
            feats = self.store.read(name)
        except FeatureError as exc:
            self._skip(name, str(exc))
        else:
            found = self._frame(name, frame)
            if found is None:
                tried = frame if frame is not None else self.store.frame_path(name)
                self._skip(name, f"no frame at {tried} (nor first_frames/, frames/ or video/ files)")
            else:
                result = (feats, found)
        self._cache[name] = result
        return result

    def _frame(self, name: str, frame: Path | None) -> Path | None:
        if frame is not None:
            return frame if frame.is_file() else None
        own = self.store.frame_path(name)
        if own.is_file():
            return own
        for root in self.frame_roots:
            src = find_frame_source(root, name)
            if src is not None:
                return src
        return None

    def _skip(self, name: str, why: str) -> None:
        message = f"skipped clip {name!r}: {why}"
        n = len(self.report.skipped)
        if n < LOG_SKIPPED:
            log.warning("%s: %s", self.report.source, message)
        else:
            log.debug("%s: %s", self.report.source, message)
        self.report.skipped.append(message)
        if self.warnings is not None:
            self.warnings.append(message)

    def finish(self, samples: Sequence[TrainSample]) -> None:
        """Count ``samples`` into the report and log its summary line."""
        finish_report(self.report, samples)


def finish_report(report: ReadReport, samples: Sequence[TrainSample]) -> None:
    """Count a reader's ``samples`` into ``report`` and log its summary line."""
    report.samples += len(samples)
    report.clips += len({s.name for s in samples})
    if len(report.skipped) > LOG_SKIPPED:
        log.warning(
            "%s: %d more clips skipped (see the report)", report.source, len(report.skipped) - LOG_SKIPPED
        )
    log.info("%s", report.text())


def feature_dims(config: EmotionLlamaConfig) -> dict[str, int]:
    f = config.features
    return {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim}


def open_feature_store(root: str | Path, config: EmotionLlamaConfig) -> FeatureStore:
    """The store at ``root`` with the model's dimensions; a missing folder is an error rather
    than a store in which every clip is missing."""
    root = Path(root)
    if not root.is_dir():
        raise TrainDataError(f"{root}: no such feature folder")
    return open_store(root, feature_dims(config))


def _read_json_dict(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainDataError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainDataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TrainDataError(f"{path}: expected a JSON object keyed by clip name")
    return data


def read_training_folder(
    folder: str | Path,
    config: EmotionLlamaConfig,
    *,
    tasks: Sequence[str] = ("emotion", "reason"),
    split: str | None = None,
    split_file: str = "split.json",
    warnings: list[str] | None = None,
    features: str | Path | None = None,
    report: ReadReport | None = None,
) -> list[TrainSample]:
    """One :class:`TrainSample` per clip and task that has a target, in clip-name order.

    ``split`` restricts the clips to ``split_file[split]``. ``features`` is the feature store
    (default: the folder itself). A clip whose features cannot be read is skipped and reported
    once (logged, appended to ``warnings`` when given and to ``report``); it is never filled
    with zeros, which would teach the model that silence means something.
    """
    folder = Path(folder)
    for task in tasks:
        if task not in TASKS:
            raise TrainDataError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if not tasks:
        raise TrainDataError("tasks is empty")
    labels = {c.name: c.label for c in read_ncev(find_labels_file(folder))}
    subs_path = folder / "subtitles.csv"
    subtitles = read_subtitles(subs_path) if subs_path.is_file() else {}
    targets: dict[str, dict[str, str]] = {}
    for task in tasks:
        source = TARGET_SOURCES[task]
        if source is None:
            targets[task] = {n: lab for n, lab in labels.items() if lab}
            continue
        file, key = source
        entries = _read_json_dict(folder / file)
        targets[task] = {
            n: str(e[key])
            for n, e in entries.items()
            if isinstance(e, dict) and str(e.get(key) or "").strip()
        }
    names = sorted(set().union(*(set(t) for t in targets.values())))
    if split is not None:
        names = restrict_to_split(names, folder / split_file, split)
    report = report if report is not None else ReadReport(f"folder {folder}")
    store = open_feature_store(features if features is not None else folder, config)
    resolver = ClipResolver(store, report, frame_roots=[folder], warnings=warnings)
    samples: list[TrainSample] = []
    for name in names:
        found = resolver.get(name)
        if found is None:
            continue
        feats, frame = found
        subtitle = subtitles.get(name, "")
        for task in tasks:
            if name in targets[task]:
                samples.append(TrainSample(name, subtitle, task, targets[task][name], frame, feats))
    resolver.finish(samples)
    return samples


def restrict_to_split(names: Sequence[str], split_path: Path, split: str) -> list[str]:
    """The names listed under ``split`` in the JSON file ``split_path`` (``{split: [names]}``)."""
    splits = _read_json_dict(split_path)
    if split not in splits:
        raise TrainDataError(f"{split_path}: no split {split!r} (has {', '.join(splits)})")
    wanted = set(splits[split])
    return [n for n in names if n in wanted]


def _load_frame(frame: Path | np.ndarray) -> np.ndarray:
    if isinstance(frame, np.ndarray):
        return frame
    from emotion_llama.media.frames import read_frame

    return read_frame(frame)


class TrainDataset(Dataset[dict[str, Any]]):
    """Clips, each with the tasks it has targets for; an item draws one task (uniformly, as the
    authors' stage-1 mix) and one instruction of that task's pool.

    ``dataset[i]`` uses draw 0; the training loop passes ``(i, draw)`` with the item's global
    position so that the draws differ between passes yet are reproducible.

    ``reports`` are the readers' :class:`ReadReport` s; :attr:`summary` adds them up (clips,
    samples per task, skipped and filtered clips) and :attr:`skipped` lists the skipped clips.
    """

    def __init__(
        self,
        samples: Sequence[TrainSample],
        processor: EmotionLlamaProcessor,
        *,
        seed: int = 0,
        layout: str = "training",
        reports: Sequence[ReadReport] = (),
    ) -> None:
        by_clip: dict[str, list[TrainSample]] = {}
        for s in samples:
            by_clip.setdefault(s.name, []).append(s)
        if not by_clip:
            raise TrainDataError("no training samples")
        self.clips: list[list[TrainSample]] = [by_clip[n] for n in sorted(by_clip)]
        self.processor = processor
        self.seed = seed
        self.layout = layout
        self.reports: list[ReadReport] = list(reports)
        # Frames are decoded once: the frozen ViT input of a clip never changes.
        self._pixels: dict[str, torch.Tensor] = {}

    @property
    def skipped(self) -> list[str]:
        """One line per clip the readers skipped (missing features or frame)."""
        return [m for r in self.reports for m in r.skipped]

    @property
    def summary(self) -> dict[str, Any]:
        """Clips and samples (per task) in the dataset, and what the readers dropped."""
        tasks: dict[str, int] = {}
        for clip in self.clips:
            for s in clip:
                tasks[s.task] = tasks.get(s.task, 0) + 1
        return {
            "clips": len(self.clips),
            "samples": sum(tasks.values()),
            "tasks": dict(sorted(tasks.items())),
            "skipped": sum(len(r.skipped) for r in self.reports),
            "filtered": sum(r.filtered for r in self.reports),
            "sources": [r.as_dict() for r in self.reports],
        }

    def __len__(self) -> int:
        return len(self.clips)

    def names(self) -> list[str]:
        return [c[0].name for c in self.clips]

    def pixels(self, sample: TrainSample) -> torch.Tensor:
        # Keyed by the frame too: mixed sources may use one name for two different clips.
        key = f"{sample.name}\0{sample.frame}" if isinstance(sample.frame, Path) else sample.name
        cached = self._pixels.get(key)
        if cached is None:
            cached = self.processor.preprocess_image(_load_frame(sample.frame))
            self._pixels[key] = cached
        return cached

    def vision(self, sample: TrainSample) -> dict[str, torch.Tensor]:
        """The frame input of an item: ``{"pixel_values": (3, S, S)}``."""
        return {"pixel_values": self.pixels(sample)}

    def item(
        self,
        index: int,
        draw: int = 0,
        task: str | None = None,
        *,
        vision: Callable[[TrainSample], dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, Any]:
        """The encoded item; ``task`` forces one task instead of drawing it. ``vision`` gives the
        item's frame input (default :meth:`vision`; a cache of ViT outputs gives
        ``vision_tokens``)."""
        options = self.clips[index]
        # A string seed is hashed with SHA-512 by ``random``, stable across processes and runs.
        rng = random.Random(f"{self.seed}:{index}:{draw}")
        if task is None:
            sample = rng.choice(options)
        else:
            found = [s for s in options if s.task == task]
            if not found:
                raise TrainDataError(f"clip {options[0].name!r} has no target for task {task!r}")
            sample = found[0]
        instruction = sample.instruction or pick_instruction(sample.task, rng)
        encoded = self.processor.encode(
            sample.subtitle, sample.task, instruction, answer=sample.target, layout=self.layout
        )
        feats = sample.features
        return {
            "encoded": encoded,
            **(vision or self.vision)(sample),
            "local_feats": torch.from_numpy(np.asarray(feats.local, dtype=np.float32)),
            "temporal_feats": torch.from_numpy(np.asarray(feats.temporal, dtype=np.float32)),
            "audio_feats": torch.from_numpy(np.asarray(feats.audio, dtype=np.float32)),
            "task": sample.task,
            "name": sample.name,
        }

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, draw = key if isinstance(key, tuple) else (key, 0)
        return self.item(int(index), int(draw))

    def collate(self, items: list[dict[str, Any]]) -> MultimodalInputs:
        return collate_fn(items, self.processor)


def collate_fn(items: list[dict[str, Any]], processor: EmotionLlamaProcessor) -> MultimodalInputs:
    """Right-padded ids/labels/masks (the training layout's padding) plus the stacked features
    and frame input, ``pixel_values`` or ``vision_tokens``, whichever the items carry: exactly
    the inputs of ``EmotionLlama.forward``. The items' ``task`` and ``name`` are bookkeeping and
    stay out of the batch."""
    encoded: list[EncodedSample] = [it["encoded"] for it in items]
    return processor.batch(encoded, items, padding_side="right")
