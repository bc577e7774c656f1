"""DFEW folds as training samples: DFEW's own split files, or the evaluation layout ``fold1/`` ..
``fold5/``. The split files and fold folders themselves are read by
:mod:`emotion_llama.data.formats.lists` (with :data:`DFEW_LABELS`, DFEW's label numbers)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.data.formats.clips import ClipResolver, emotion_samples, label_target, open_feature_store
from emotion_llama.data.formats.lists import (
    DFEW_LABELS,
    find_dfew_split,
    read_classification_folder,
    read_dfew_split,
)
from emotion_llama.data.samples import DataError, ReadReport, TrainDataError, TrainSample, finish_report

#: The DFEW instruction: the evaluation's wording (``evaluate.runner``), so that a model
#: fine-tuned on DFEW is asked the same question at test time. The nine-label instruction would
#: not offer "disgust".
DFEW_INSTRUCTION = f"Please determine which emotion label in the video represents: {', '.join(DFEW_LABELS)}."


def read_dfew_fold(
    path: str | Path,
    config: EmotionLlamaConfig,
    *,
    fold: int,
    split: str = "train",
    features: str | Path | None = None,
    report: ReadReport | None = None,
) -> list[TrainSample]:
    """Emotion samples of DFEW fold ``fold`` (1-5), ``split`` ``train`` or ``test``.

    Two layouts: DFEW's own split files (``EmoLabel_DataSplit/{train,test}(single-labeled)/
    set_{fold}.csv``, ``video_name,label``, labels 1-7 = happy, sad, neutral, angry, surprise,
    disgust, fear; clip numbers become DFEW's five-digit names, ``1`` -> ``00001``; features
    from ``features``, default ``path``), or the evaluation layout ``fold1/`` .. ``fold5/`` of
    benchmark folders (SPEC 7; ``test`` is ``fold{k}``, ``train`` the other four, since DFEW's
    test sets partition the clips; features from each fold folder unless ``features``). DFEW has
    no subtitles; the instruction lists DFEW's seven labels (:data:`DFEW_INSTRUCTION`).
    """
    root = Path(path)
    if not root.is_dir():
        raise TrainDataError(f"{root}: no such DFEW folder")
    if split not in ("train", "test"):
        raise TrainDataError(f"DFEW split must be 'train' or 'test', not {split!r}")
    report = report if report is not None else ReadReport(f"dfew {root} fold {fold} {split}")
    samples: list[TrainSample] = []
    fold_dirs = {k: root / f"fold{k}" for k in range(1, 6) if (root / f"fold{k}").is_dir()}
    if fold_dirs:
        if fold not in fold_dirs:
            raise TrainDataError(
                f"{root}: no fold{fold}/ folder (has {', '.join(d.name for d in fold_dirs.values())})"
            )
        wanted = [fold] if split == "test" else [k for k in sorted(fold_dirs) if k != fold]
        shared = open_feature_store(features, config) if features is not None else None
        for k in wanted:
            clips = read_classification_folder(fold_dirs[k], DFEW_LABELS, f"fold{k}")
            store = shared if shared is not None else open_feature_store(fold_dirs[k], config)
            resolver = ClipResolver(store, report, frame_roots=[fold_dirs[k]])
            rows = _dfew_rows(clips, report, str(fold_dirs[k]))
            samples.extend(emotion_samples(rows, resolver, {}, DFEW_INSTRUCTION))
        finish_report(report, samples)
        return samples
    try:
        split_file = find_dfew_split(root, fold, split)
    except DataError as exc:
        raise TrainDataError(str(exc)) from None
    clips = read_dfew_split(split_file)
    store = open_feature_store(features if features is not None else root, config)
    resolver = ClipResolver(store, report, frame_roots=[root])
    # DFEW clip numbers may have been kept unpadded when the features were extracted.
    rows = [
        (n if resolver.has(n) or not n.isdigit() or not resolver.has(str(int(n))) else str(int(n)), t)
        for n, t in _dfew_rows(clips, report, str(split_file))
    ]
    samples = emotion_samples(rows, resolver, {}, DFEW_INSTRUCTION)
    resolver.finish(samples)
    return samples


def _dfew_rows(clips: Sequence[Any], report: ReadReport, where: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for clip in clips:
        if clip.name in seen:
            continue
        seen.add(clip.name)
        if not clip.label:
            report.unlabelled += 1
            continue
        rows.append((clip.name, label_target(clip.label, f"{where} (clip {clip.name})")))
    return rows
