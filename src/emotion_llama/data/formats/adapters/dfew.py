"""DFEW (Jiang et al. 2020): one fold of its 5-fold split files.

Layout (the DFEW release)::

    ROOT/
      EmoLabel_DataSplit/train(single-labeled)/set_1.csv .. set_5.csv
      EmoLabel_DataSplit/test(single-labeled)/set_1.csv .. set_5.csv
      Clip/original/{00001}.mp4     (or Clip/clip_224x224_avi/, Clip/clip_224x224/, videos/)

A split file is ``video_name,label`` with ``video_name`` the clip number (``1``) and ``label``
1-7 = happy, sad, neutral, angry, surprise, disgust, fear (:data:`~emotion_llama.prompts.
DFEW_LABELS`). The files are found and read by :mod:`emotion_llama.data.formats.lists` (also as
``train_set_1.csv``/``test_set_1.csv``, the names other repositories copy them under).
"""

from __future__ import annotations

from pathlib import Path

from emotion_llama.data.formats.adapters.common import Videos, check_choice, dataset_folder, finish
from emotion_llama.data.formats.lists import find_dfew_split, read_dfew_split
from emotion_llama.data.formats.manifest import ManifestEntry
from emotion_llama.data.samples import DataError

_CLIP_FOLDERS = ("Clip/original", "Clip/clip_224x224_avi", "Clip/clip_224x224", "Clip", "videos", ".")


def read_dfew_csv(root: str | Path, *, fold: int = 1, require_videos: bool = False) -> list[ManifestEntry]:
    """DFEW's fold ``fold`` (1-5) as manifest entries: the clips of its train and test split
    files, ``split`` ``train`` or ``test``.

    A clip is named as DFEW's clip files (``1`` -> ``00001``); its label is DFEW's word for the
    number (the project's words already). DFEW has no subtitles, valence or speakers. A clip whose
    video is absent gets no ``path`` (refused with ``require_videos``).
    """
    check_choice("DFEW", "fold", fold, range(1, 6))
    root = dataset_folder(root, "DFEW")
    folders = [root / f for f in _CLIP_FOLDERS]
    videos = Videos("DFEW", require_videos)
    entries: list[ManifestEntry] = []
    for split in ("train", "test"):
        try:
            file = find_dfew_split(root, fold, split)
            clips = read_dfew_split(file)
        except DataError as exc:
            raise DataError(f"DFEW: {exc}") from None
        for clip in clips:
            entries.append(
                ManifestEntry(
                    name=clip.name,
                    path=videos.by_stem(folders, clip.name),
                    label=clip.label,
                    split=split,
                    where=f"{file} (clip {clip.name})",
                )
            )
    videos.finish()
    return finish(entries, "DFEW", root)
