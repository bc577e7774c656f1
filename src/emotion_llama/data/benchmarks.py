"""Benchmark folders in their standard layouts (SPEC 5), read without any model.

A classification benchmark folder (MER2023-SEMI, MER2024-NOISE, one DFEW fold)::

    labels.txt                 NCEV lines: ``name frame_count emotion valence`` (any *_NCEV.txt works)
    subtitles.csv              ``name,sentence`` (MER2023) or ``name,sentence_en`` (MER2024)
    HL-UTT/ mae_340_UTT/ maeV_399_UTT/    the authors' pre-extracted features
    first_frames/{name}.jpg|png   or   video/{name}.mp4|avi   the frame for the global encoder

DFEW: ``fold1`` .. ``fold5`` sub-folders of that layout; labels may be DFEW's numbers 1-7.
EMER: ``references.csv`` with ``name`` and ``reason`` (or ``description``) columns.
Open vocabulary: ``references.csv`` with ``name`` and ``openset`` (a list of emotion words).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from emotion_llama.errors import EmotionLlamaError

#: DFEW's label numbers 1..7 in the dataset's own order.
DFEW_LABELS: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")


class DataError(EmotionLlamaError):
    """A benchmark file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Clip:
    name: str
    subtitle: str = ""
    label: str | None = None
    valence: float | None = None
    reference: str | list[str] | None = None
    fold: str | None = None


def read_ncev(path: str | Path, numeric_labels: tuple[str, ...] | None = None) -> list[Clip]:
    """``name frame_count emotion valence`` per line (valence may be missing; -10 is MER2023's
    placeholder and reads as None)."""
    path = Path(path)
    clips: list[Clip] = []
    for i, line in enumerate(_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise DataError(f"{path}:{i}: expected 'name frame_count emotion [valence]', got {line!r}")
        name, _frames, label = parts[:3]
        if numeric_labels is not None and label.isdigit():
            k = int(label)
            if not 1 <= k <= len(numeric_labels):
                raise DataError(f"{path}:{i}: label number {k} outside 1..{len(numeric_labels)}")
            label = numeric_labels[k - 1]
        valence = None
        if len(parts) > 3:
            try:
                v = float(parts[3])
            except ValueError:
                raise DataError(f"{path}:{i}: valence {parts[3]!r} is not a number") from None
            valence = None if v == -10 else v
        clips.append(Clip(name=name, label=label.lower(), valence=valence))
    return clips


def read_subtitles(path: str | Path) -> dict[str, str]:
    """``name`` plus the first of ``sentence_en``, ``english``, ``sentence`` as the text."""
    path = Path(path)
    rows = _csv_rows(path)
    if not rows:
        return {}
    cols = rows[0].keys()
    text_col = next((c for c in ("sentence_en", "english", "sentence", "subtitle") if c in cols), None)
    if "name" not in cols or text_col is None:
        raise DataError(f"{path}: needs a 'name' column and one of sentence_en, english, sentence")
    return {r["name"]: (r[text_col] or "").strip() for r in rows}


def read_references(path: str | Path, column: str) -> dict[str, str]:
    """``name`` -> the reference text of ``column`` (falling back to common synonyms)."""
    path = Path(path)
    rows = _csv_rows(path)
    aliases = {"reason": ("reason", "description", "caption", "smp_reason_caption"), "openset": ("openset",)}
    cols = rows[0].keys() if rows else []
    col = next((c for c in aliases.get(column, (column,)) if c in cols), None)
    if "name" not in cols or col is None:
        raise DataError(f"{path}: needs 'name' and '{column}' columns")
    return {r["name"]: (r[col] or "").strip() for r in rows}


def find_labels_file(folder: Path) -> Path:
    for cand in [folder / "labels.txt", *sorted(folder.glob("*NCEV*.txt"))]:
        if cand.is_file():
            return cand
    raise DataError(f"{folder}: no labels.txt (or *_NCEV.txt) label list")


def find_frame_source(folder: Path, name: str) -> Path | None:
    images = (".jpg", ".png", ".jpeg")
    for sub, exts in (("first_frames", images), ("frames", images), ("video", (".mp4", ".avi", ".mkv"))):
        for ext in exts:
            p = folder / sub / f"{name}{ext}"
            if p.is_file():
                return p
    return None


def read_classification_folder(
    folder: str | Path, numeric_labels: tuple[str, ...] | None = None, fold: str | None = None
) -> list[Clip]:
    folder = Path(folder)
    clips = read_ncev(find_labels_file(folder), numeric_labels)
    subs_path = folder / "subtitles.csv"
    subs = read_subtitles(subs_path) if subs_path.is_file() else {}
    return [Clip(c.name, subs.get(c.name, ""), c.label, c.valence, None, fold) for c in clips]


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None


def _csv_rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
