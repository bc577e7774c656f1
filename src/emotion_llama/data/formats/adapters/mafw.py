"""MAFW (Liu et al. 2022): the per-fold split files of its ``Train & Test Set`` folder.

Layout::

    ROOT/
      Train & Test Set/single/no_caption/set_1/train.txt, test.txt .. set_5/
      Train & Test Set/compound/no_caption/set_1/ .. set_5/
      data/clips/{clip}.mp4          (clips.zip; also clips/ or videos/ directly under ROOT)
      Labels/single-set.xlsx ...     (not read: the split files carry the same labels)

A split-file line is ``00025.mp4 anger`` (the clip's file, a space, its label; compound labels
join MAFW's words with ``_``: ``anger_disgust``). The folder may also be ``split/`` (as MAE-DFER
renames it) or ROOT itself (ROOT/single/no_caption/set_1/). This layout is the one MAFW's README
shows (``Train & Test Set`` with ``single`` and ``compound``) and that public loaders read
(``set_{k}/train.txt`` with ``CLIP label`` lines); the ``with_caption`` files (tab-separated,
with the Chinese and English descriptions, not UTF-8) and the Excel label files are not read.
"""

from __future__ import annotations

from pathlib import Path

from emotion_llama.data.formats.adapters.common import (
    Videos,
    check_choice,
    dataset_folder,
    finish,
    project_word,
    read_lines,
    require_file,
)
from emotion_llama.data.formats.manifest import ManifestEntry
from emotion_llama.data.samples import DataError

#: MAFW's eleven emotions, in the order of its label numbers 1..11 (``single-set.xlsx``).
MAFW_LABELS: tuple[str, ...] = (
    "anger",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
    "contempt",
    "anxiety",
    "helplessness",
    "disappointment",
)

_SPLIT_FOLDERS = ("Train & Test Set", "Train&Test Set", "train_test_set/Train & Test Set", "split", ".")


def read_mafw(
    root: str | Path, *, fold: int = 1, subset: str = "single", require_videos: bool = False
) -> list[ManifestEntry]:
    """MAFW's clips of fold ``fold`` (1-5) of ``subset`` (``single``: 11 emotions;
    ``compound``: the compound labels) as manifest entries: ``split`` ``train`` or ``test`` from
    the fold's ``train.txt`` and ``test.txt``.

    A clip is named by its file's stem (``00025``). Labels are in the project's words where MAFW
    says otherwise (anger -> angry, happiness -> happy, sadness -> sad; disgust, fear, neutral,
    surprise, contempt, anxiety, helplessness, disappointment as they are; a compound label maps
    each part: ``anger_disgust`` -> ``angry_disgust``); label numbers 1-11 are read as
    :data:`MAFW_LABELS`. MAFW has no subtitles, valence or speakers. A clip whose video is absent
    gets no ``path`` (refused with ``require_videos``).
    """
    check_choice("MAFW", "fold", fold, range(1, 6))
    check_choice("MAFW", "subset", subset, ("single", "compound"))
    root = dataset_folder(root, "MAFW")
    folder = next(
        (
            root / base / subset / "no_caption" / f"set_{fold}"
            for base in _SPLIT_FOLDERS
            if (root / base / subset / "no_caption" / f"set_{fold}").is_dir()
        ),
        None,
    )
    if folder is None:
        raise DataError(
            f"MAFW: no 'Train & Test Set/{subset}/no_caption/set_{fold}/' folder under {root} "
            "(MAFW's split files train.txt and test.txt)"
        )
    clip_dirs = [root / "data" / "clips", root / "clips", root / "videos", root / "data", root]
    videos = Videos("MAFW", require_videos)
    entries: list[ManifestEntry] = []
    for split in ("train", "test"):
        file = require_file(folder / f"{split}.txt", "MAFW", f"the {split} list of fold {fold}")
        for i, line in enumerate(read_lines(file, "MAFW"), start=1):
            if not line.strip():
                continue
            where = f"{file}:{i}"
            parts = line.split()
            if len(parts) != 2:
                raise DataError(
                    f"MAFW: {where}: expected 'CLIP.mp4 LABEL' (no_caption split file), "
                    f"got {len(parts)} field(s): {line.strip()[:80]!r}"
                )
            clip, raw = parts
            name = Path(clip).stem if Path(clip).suffix.lower() in (".mp4", ".avi") else clip
            entries.append(
                ManifestEntry(
                    name=name,
                    path=videos.by_stem(clip_dirs, name),
                    label=_label(raw, where),
                    split=split,
                    where=where,
                )
            )
    videos.finish()
    return finish(entries, "MAFW", folder)


def _label(raw: str, where: str) -> str:
    parts = []
    for part in raw.split("_"):
        word = part.strip().lower()
        if word.isascii() and word.isdigit() and 1 <= int(word) <= len(MAFW_LABELS):
            word = MAFW_LABELS[int(word) - 1]
        if word not in MAFW_LABELS:
            raise DataError(f"MAFW: {where}: label {raw!r} is not made of {', '.join(MAFW_LABELS)}")
        parts.append(project_word(word))
    return "_".join(parts)
