"""The project's dataset folder (SPEC 5) as training samples.

A folder in the project's format holds ``labels.txt`` (NCEV), ``subtitles.csv``,
``merr_coarse.json`` (``caption``, task ``reason``), ``merr_fine.json`` (``smp_reason_caption``,
task ``reason_v2``), optionally ``split.json``, and a feature store (native or the authors'
layout) with one frame per clip. :func:`read_training_folder` turns it into one
:class:`~emotion_llama.data.samples.TrainSample` per (clip, task).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.data.formats.clips import (
    ClipResolver,
    open_feature_store,
    read_json_dict,
    restrict_to_split,
)
from emotion_llama.data.formats.lists import find_labels_file, read_ncev, read_subtitles
from emotion_llama.data.samples import ReadReport, TrainDataError, TrainSample
from emotion_llama.prompts import TASKS

#: Where each task's target comes from: (file, field); ``None`` means the label list.
TARGET_SOURCES: dict[str, tuple[str, str] | None] = {
    "emotion": None,
    "reason": ("merr_coarse.json", "caption"),
    "reason_v2": ("merr_fine.json", "smp_reason_caption"),
}


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
        entries = read_json_dict(folder / file)
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
