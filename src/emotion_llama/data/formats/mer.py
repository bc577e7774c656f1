"""MER2023 / MER2024 label lists as training samples (MER2024's noise track reads the same).

The lists themselves (NCEV, MER2024's ``label-disdim.csv``, the subtitles beside them) are read
by :mod:`emotion_llama.data.formats.lists`, as the evaluation reads them.
"""

from __future__ import annotations

from pathlib import Path

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.data.formats.clips import (
    ClipResolver,
    emotion_samples,
    label_target,
    locate,
    open_feature_store,
    restrict_to_split,
    subtitles_for,
)
from emotion_llama.data.formats.lists import find_label_list, read_label_list
from emotion_llama.data.samples import ReadReport, TrainSample


def read_mer_labels(
    path: str | Path,
    config: EmotionLlamaConfig,
    *,
    features: str | Path | None = None,
    subtitles: str | Path | None = None,
    split: str | None = None,
    split_file: str = "split.json",
    report: ReadReport | None = None,
) -> list[TrainSample]:
    """Emotion samples from a MER2023 / MER2024 label list (MER2024's noise track reads the same).

    ``path`` is the list (NCEV ``name frame_count emotion valence``, or a CSV with ``name`` and
    ``discrete``/``emotion``/``label``, as MER2024's ``label-disdim.csv``) or a folder holding
    one (``labels.txt``, ``*_NCEV.txt``, ``label-disdim.csv``, ``labels.csv``). Lists are read by
    :mod:`emotion_llama.data.formats.lists`, the evaluation's readers. Clips without a label are
    counted as ``unlabelled``; a clip listed twice keeps its first line.
    """
    folder, file = locate(Path(path))
    labels_path = file if file is not None else find_label_list(folder)
    report = report if report is not None else ReadReport(f"mer {labels_path}")
    clips = read_label_list(labels_path)
    subs = subtitles_for(subtitles, folder)
    rows: dict[str, str] = {}
    for i, clip in enumerate(clips, start=1):
        if clip.name in rows:
            continue
        if not clip.label:
            report.unlabelled += 1
            continue
        rows[clip.name] = label_target(clip.label, f"{labels_path} (clip {i}, {clip.name})")
    names = list(rows)
    if split is not None:
        names = restrict_to_split(names, folder / split_file, split)
    store = open_feature_store(features if features is not None else folder, config)
    resolver = ClipResolver(store, report, frame_roots=[folder])
    samples = emotion_samples([(n, rows[n]) for n in names], resolver, subs)
    resolver.finish(samples)
    return samples
