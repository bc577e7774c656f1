"""Training data: samples -> processor-encoded, collated batches.

:class:`TrainDataset` holds the :class:`~emotion_llama.data.samples.TrainSample` s the readers of
:mod:`emotion_llama.data.formats` yield (the project's dataset folder, MER2023/MER2024 label
lists, pseudo-labels, DFEW folds, JSONL; the entry point recipes use is
:func:`emotion_llama.train.formats.open_training_data`) and draws one task per clip and item, as
the authors' stage-1 dataset does (emotion or reason at random), and encodes it;
:func:`collate_fn` batches the items. The readers' names used from here before are re-exported.

Determinism: every random choice of an item (task, instruction) comes from a
``random.Random`` seeded by ``(seed, index, draw)``, where ``draw`` is the global position of the
item in the training stream. An interrupted run that restarts at the same position therefore
sees exactly the same samples, whatever the worker processes did before.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from emotion_llama.data.formats.clips import ClipResolver, feature_dims, open_feature_store, restrict_to_split
from emotion_llama.data.formats.folder import TARGET_SOURCES, read_training_folder
from emotion_llama.data.samples import LOG_SKIPPED, ReadReport, TrainDataError, TrainSample, finish_report
from emotion_llama.modalities import MODALITIES, PARTS_OF
from emotion_llama.model.inputs import MultimodalInputs
from emotion_llama.model.processor import EmotionLlamaProcessor, EncodedSample
from emotion_llama.prompts import pick_instruction

__all__ = [
    "LOG_SKIPPED",
    "TARGET_SOURCES",
    "ClipResolver",
    "ReadReport",
    "TrainDataError",
    "TrainDataset",
    "TrainSample",
    "collate_fn",
    "feature_dims",
    "finish_report",
    "open_feature_store",
    "read_training_folder",
    "restrict_to_split",
]


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
        #: Chance that an item loses one modality (``train.modality_dropout``; the trainer sets it).
        self.modality_dropout = 0.0
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
        subtitle, absent = sample.subtitle, frozenset[str]()
        if self.modality_dropout and rng.random() < self.modality_dropout:
            dropped = rng.choice(MODALITIES)
            subtitle, absent = ("", absent) if dropped == "text" else (subtitle, frozenset(PARTS_OF[dropped]))
        encoded = self.processor.encode(
            subtitle, sample.task, instruction, answer=sample.target, layout=self.layout, absent=absent
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
