"""Training data: a dataset folder (SPEC 5) -> samples -> processor-encoded, collated batches.

A folder in the project's format holds ``labels.txt`` (NCEV), ``subtitles.csv``,
``merr_coarse.json`` (``caption``, task ``reason``), ``merr_fine.json`` (``smp_reason_caption``,
task ``reason_v2``), optionally ``split.json``, and a feature store (native or the authors'
layout) with one frame per clip. :func:`read_training_folder` turns it into one
:class:`TrainSample` per (clip, task); :class:`TrainDataset` draws one task per clip and item, as
the authors' stage-1 dataset does (emotion or reason at random), and encodes it.

Determinism: every random choice of an item (task, instruction) comes from a
``random.Random`` seeded by ``(seed, index, draw)``, where ``draw`` is the global position of the
item in the training stream. An interrupted run that restarts at the same position therefore
sees exactly the same samples, whatever the worker processes did before.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.data.benchmarks import find_labels_file, read_ncev, read_subtitles
from emotion_llama.encoders.store import ClipFeatures, FeatureError, open_store
from emotion_llama.errors import EmotionLlamaError
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
    """One (clip, task) pair with its raw (not yet normalised) target."""

    name: str
    subtitle: str
    task: str
    target: str
    frame: Path | np.ndarray
    features: ClipFeatures


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
) -> list[TrainSample]:
    """One :class:`TrainSample` per clip and task that has a target, in clip-name order.

    ``split`` restricts the clips to ``split_file[split]``. A clip whose features cannot be read
    is skipped and reported once (logged, and appended to ``warnings`` when given); it is never
    filled with zeros, which would teach the model that silence means something.
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
        splits = _read_json_dict(folder / split_file)
        if split not in splits:
            raise TrainDataError(f"{folder / split_file}: no split {split!r} (has {', '.join(splits)})")
        wanted = set(splits[split])
        names = [n for n in names if n in wanted]
    f = config.features
    store = open_store(folder, {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim})
    samples: list[TrainSample] = []
    for name in names:
        try:
            feats = store.read(name)
        except FeatureError as exc:
            message = f"skipped clip {name!r}: {exc}"
            log.warning(message)
            if warnings is not None:
                warnings.append(message)
            continue
        frame = store.frame_path(name)
        if not frame.is_file():
            message = f"skipped clip {name!r}: no frame at {frame}"
            log.warning(message)
            if warnings is not None:
                warnings.append(message)
            continue
        subtitle = subtitles.get(name, "")
        for task in tasks:
            if name in targets[task]:
                samples.append(TrainSample(name, subtitle, task, targets[task][name], frame, feats))
    return samples


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
    """

    def __init__(
        self,
        samples: Sequence[TrainSample],
        processor: EmotionLlamaProcessor,
        *,
        seed: int = 0,
        layout: str = "training",
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
        # Frames are decoded once: the frozen ViT input of a clip never changes.
        self._pixels: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def names(self) -> list[str]:
        return [c[0].name for c in self.clips]

    def pixels(self, sample: TrainSample) -> torch.Tensor:
        cached = self._pixels.get(sample.name)
        if cached is None:
            cached = self.processor.preprocess_image(_load_frame(sample.frame))
            self._pixels[sample.name] = cached
        return cached

    def item(self, index: int, draw: int = 0, task: str | None = None) -> dict[str, Any]:
        """The encoded item; ``task`` forces one task instead of drawing it."""
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
        instruction = pick_instruction(sample.task, rng)
        encoded = self.processor.encode(
            sample.subtitle, sample.task, instruction, answer=sample.target, layout=self.layout
        )
        feats = sample.features
        return {
            "encoded": encoded,
            "pixel_values": self.pixels(sample),
            "local_feats": torch.from_numpy(np.asarray(feats.local, dtype=np.float32)),
            "temporal_feats": torch.from_numpy(np.asarray(feats.temporal, dtype=np.float32)),
            "audio_feats": torch.from_numpy(np.asarray(feats.audio, dtype=np.float32)),
            "task": sample.task,
            "name": sample.name,
        }

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, draw = key if isinstance(key, tuple) else (key, 0)
        return self.item(int(index), int(draw))

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate_fn(items, self.processor)


def collate_fn(items: list[dict[str, Any]], processor: EmotionLlamaProcessor) -> dict[str, torch.Tensor]:
    """Right-padded ids/labels/masks (the training layout's padding) plus stacked pixels and
    features: exactly the keyword arguments of ``EmotionLlama.forward``."""
    encoded: list[EncodedSample] = [it["encoded"] for it in items]
    batch = processor.collate(encoded, padding_side="right")
    for key in ("pixel_values", "local_feats", "temporal_feats", "audio_feats"):
        batch[key] = torch.stack([it[key] for it in items])
    return batch
