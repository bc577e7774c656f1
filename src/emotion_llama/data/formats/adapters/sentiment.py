"""The sentiment datasets as MMSA distributes them: CH-SIMS, CH-SIMS v2, CMU-MOSI, CMU-MOSEI.

Layout (one folder per dataset; the same for all four)::

    ROOT/
      label.csv                      one row per clip
      Raw/{video_id}/{clip_id}.mp4   the clips

``label.csv`` columns, as released: CH-SIMS and CH-SIMS v2 ``video_id, clip_id, text, label,
label_T, label_A, label_V, annotation, mode``; MOSI and MOSEI ``video_id, clip_id, text, label,
annotation, mode`` (``label_T/A/V`` may be present and empty). The adapter needs ``video_id,
clip_id, text, label, mode``. ``label`` is the sentiment score (SIMS -1..1, MOSI/MOSEI -3..3),
``mode`` the split (``train``, ``valid``, ``test``).
"""

from __future__ import annotations

from pathlib import Path

from emotion_llama.data.formats.adapters.common import (
    SPLIT_NAMES,
    Videos,
    check_choice,
    dataset_folder,
    finish,
    number,
    read_table,
    require_file,
    sentiment_label,
)
from emotion_llama.data.formats.manifest import ManifestEntry
from emotion_llama.data.samples import DataError

_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")


def read_mmsa_sentiment(
    root: str | Path, *, dataset: str = "MOSI", classes: int = 3, require_videos: bool = False
) -> list[ManifestEntry]:
    """The clips of an MMSA-layout sentiment dataset (``dataset`` names it in errors) as manifest
    entries.

    A clip is named ``{video_id}_{clip_id}``; ``subtitle`` is ``text``, ``valence`` the score
    ``label``, ``split`` ``train``, ``val`` (MMSA's ``valid``) or ``test`` from ``mode``. The
    label follows the sentiment rule on the score: ``classes=3``: ``positive`` above 0,
    ``negative`` below 0, ``neutral`` at 0; ``classes=2``: the common binary rule that leaves the
    clips scored 0 out (``Non0`` accuracy and F1). The video is ``Raw/{video_id}/{clip_id}.mp4``
    (a clip id written unpadded, ``1`` for ``0001``, is also looked for padded to four digits);
    a clip without one gets no ``path`` (refused with ``require_videos``).
    """
    check_choice(dataset, "classes", classes, (2, 3))
    root = dataset_folder(root, dataset)
    table = require_file(root / "label.csv", dataset, "MMSA's label table")
    videos = Videos(dataset, require_videos)
    entries: list[ManifestEntry] = []
    for where, row in read_table(table, dataset, _COLUMNS):
        video_id, clip_id = row["video_id"], row["clip_id"]
        if not video_id or not clip_id:
            raise DataError(f"{dataset}: {where}: empty {'video_id' if not video_id else 'clip_id'}")
        score = number(row["label"], where, dataset, "label")
        label = sentiment_label(score, classes)
        if label is None:
            continue
        mode = row["mode"].strip().lower()
        if mode not in ("train", "valid", "val", "test"):
            raise DataError(f"{dataset}: {where}: mode {row['mode']!r} is not train, valid or test")
        folder = root / "Raw" / video_id
        candidates = [folder / f"{clip_id}.mp4"]
        if clip_id.isdigit() and len(clip_id) < 4:
            candidates.append(folder / f"{int(clip_id):04d}.mp4")
        entries.append(
            ManifestEntry(
                name=f"{video_id}_{clip_id}",
                path=videos.file(*candidates),
                label=label,
                subtitle=row["text"] or None,
                split=SPLIT_NAMES[mode],
                valence=score,
                where=where,
            )
        )
    videos.finish()
    return finish(entries, dataset, table)


def read_ch_sims(root: str | Path, *, classes: int = 3, require_videos: bool = False) -> list[ManifestEntry]:
    """CH-SIMS (Yu et al. 2020), scores -1..1 (:func:`read_mmsa_sentiment`)."""
    return read_mmsa_sentiment(root, dataset="CH-SIMS", classes=classes, require_videos=require_videos)


def read_ch_sims_v2(
    root: str | Path, *, classes: int = 3, require_videos: bool = False
) -> list[ManifestEntry]:
    """CH-SIMS v2 (Liu et al. 2022), its supervised part, scores -1..1 (:func:`read_mmsa_sentiment`)."""
    return read_mmsa_sentiment(root, dataset="CH-SIMS v2", classes=classes, require_videos=require_videos)


def read_mosi(root: str | Path, *, classes: int = 3, require_videos: bool = False) -> list[ManifestEntry]:
    """CMU-MOSI (Zadeh et al. 2016), scores -3..3 (:func:`read_mmsa_sentiment`)."""
    return read_mmsa_sentiment(root, dataset="MOSI", classes=classes, require_videos=require_videos)


def read_mosei(root: str | Path, *, classes: int = 3, require_videos: bool = False) -> list[ManifestEntry]:
    """CMU-MOSEI (Zadeh et al. 2018), scores -3..3 (:func:`read_mmsa_sentiment`)."""
    return read_mmsa_sentiment(root, dataset="MOSEI", classes=classes, require_videos=require_videos)
