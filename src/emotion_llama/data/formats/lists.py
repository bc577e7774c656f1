"""Benchmark lists and folders in their standard layouts (SPEC 5), read without any model.

A classification benchmark folder (MER2023-SEMI, MER2024-NOISE, one DFEW fold)::

    labels.txt                 NCEV lines: ``name frame_count emotion valence`` (any *_NCEV.txt works)
    subtitles.csv              ``name,sentence`` (MER2023) or ``name,sentence_en`` (MER2024)
    HL-UTT/ mae_340_UTT/ maeV_399_UTT/    the authors' pre-extracted features
    first_frames/{name}.jpg|png   or   video/{name}.mp4|avi   the frame for the global encoder

DFEW: ``fold1`` .. ``fold5`` sub-folders of that layout (:func:`read_fold_folders`); labels may
be DFEW's numbers 1-7. EMER and open vocabulary: :mod:`emotion_llama.data.formats.references`.

Also read here (for the training readers of :mod:`emotion_llama.data.formats`): label lists as
CSV (MER2024's ``label-disdim.csv``: ``name,discrete,valence``) and DFEW's own split files
(``EmoLabel_DataSplit/{train,test}(single-labeled)/set_{k}.csv``: ``video_name,label`` with
labels 1-7; clip numbers become DFEW's five-digit clip names, ``1`` -> ``00001``).

:data:`DFEW_LABELS` is defined with the other label sets in :mod:`emotion_llama.prompts`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

from emotion_llama.data.samples import Clip, DataError, finite_number
from emotion_llama.prompts import DFEW_LABELS

_NCEV_FORMAT = "'name frame_count emotion [valence]'"


def read_ncev(path: str | Path, numeric_labels: tuple[str, ...] | None = None) -> list[Clip]:
    """``name frame_count emotion valence`` per line (valence may be missing; -10 is MER2023's
    placeholder and reads as None). A line that is not of this form (a field missing or too
    many, a frame count that is not a whole number, a valence that is not a number) is a
    :class:`DataError` naming the file and line."""
    path = Path(path)
    clips: list[Clip] = []
    for i, line in enumerate(_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if not 3 <= len(parts) <= 4:
            raise DataError(
                f"{path}:{i}: expected {_NCEV_FORMAT}, got {len(parts)} field(s): {line.strip()!r}"
            )
        name, frames, label = parts[:3]
        if not (frames.isascii() and frames.isdigit()):
            raise DataError(
                f"{path}:{i}: frame count {frames!r} is not a whole number (expected {_NCEV_FORMAT}, "
                f"got {line.strip()!r})"
            )
        label = _label_from_number(label, numeric_labels, f"{path}:{i}")
        valence = _valence(parts[3], f"{path}:{i}") if len(parts) > 3 else None
        clips.append(Clip(name=name, label=label.lower(), valence=valence))
    return clips


def _valence(text: str, where: str) -> float | None:
    """A valence field as a number; MER2023's placeholder -10 reads as None."""
    v = finite_number(text, f"{where}: valence")
    return None if v == -10 else v


def read_subtitles(path: str | Path) -> dict[str, str]:
    """``name`` plus the first of ``sentence_en``, ``english``, ``sentence`` as the text. A row
    with a wrong number of fields or no name, or a quote left open (which would swallow the
    lines after it), is a :class:`DataError` naming the file and line."""
    path = Path(path)
    cols, at, rows = read_csv_table(path)
    if not cols:
        return {}
    text_col = next((c for c in ("sentence_en", "english", "sentence", "subtitle") if c in cols), None)
    if "name" not in cols or text_col is None:
        raise DataError(
            f"{path}:{at}: needs a 'name' column and one of sentence_en, english, sentence; "
            f"has {', '.join(cols)}"
        )
    return {row_name(r, "name", f"{path}:{i}"): r[text_col].strip() for i, r in rows}


def row_name(row: dict[str, str], column: str, where: str) -> str:
    """The clip name in ``column`` of a CSV row, stripped; an empty one is a :class:`DataError`."""
    name = row[column].strip()
    if not name:
        raise DataError(f"{where}: empty {column}")
    return name


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


#: Label list files looked for in a folder, after ``labels.txt`` and ``*NCEV*.txt``.
LABEL_CSV_NAMES: tuple[str, ...] = ("label-disdim.csv", "labels.csv", "label.csv")


#: Subtitle files looked for in a folder: the project's, then MER2024's transcription file.
SUBTITLE_NAMES: tuple[str, ...] = ("subtitles.csv", "label-transcription.csv", "transcription.csv")


_NAME_COLUMNS = ("name", "video_name", "video", "clip", "clip_name")


_LABEL_COLUMNS = ("discrete", "emotion", "label")


def read_label_csv(path: str | Path, numeric_labels: tuple[str, ...] | None = None) -> list[Clip]:
    """A label list as CSV: a name column (``name``, ``video_name``, ``video``, ``clip`` or
    ``clip_name``), a label column (``discrete``, ``emotion`` or ``label``) and optionally
    ``valence`` (-10 reads as None). Numbers map through ``numeric_labels`` (1-based) when
    given; rows with an empty label keep ``label=None``."""
    path = Path(path)
    cols, at, rows = read_csv_table(path)
    name_col = next((c for c in _NAME_COLUMNS if c in cols), None)
    label_col = next((c for c in _LABEL_COLUMNS if c in cols), None)
    if name_col is None or label_col is None:
        raise DataError(
            f"{path}:{at}: needs a name column ({', '.join(_NAME_COLUMNS)}) and a label column "
            f"({', '.join(_LABEL_COLUMNS)}); has {', '.join(cols) or 'nothing'}"
        )
    clips: list[Clip] = []
    for i, row in rows:
        name = row_name(row, name_col, f"{path}:{i}")
        raw = row[label_col].strip()
        label = _label_from_number(raw, numeric_labels, f"{path}:{i}") if raw else None
        text = row.get("valence", "").strip()
        valence = _valence(text, f"{path}:{i}") if text else None
        clips.append(Clip(name=name, label=label.lower() if label else None, valence=valence))
    return clips


def read_label_list(path: str | Path, numeric_labels: tuple[str, ...] | None = None) -> list[Clip]:
    """A label list in either form: ``.csv`` (:func:`read_label_csv`) or NCEV (:func:`read_ncev`)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_label_csv(path, numeric_labels)
    return read_ncev(path, numeric_labels)


def find_label_list(folder: Path) -> Path:
    """``labels.txt``, ``*NCEV*.txt`` or one of :data:`LABEL_CSV_NAMES` in ``folder``."""
    try:
        return find_labels_file(folder)
    except DataError:
        pass
    for name in LABEL_CSV_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: no label list (labels.txt, *_NCEV.txt, {', '.join(LABEL_CSV_NAMES)})")


def find_subtitles(folder: Path) -> Path | None:
    """The first of :data:`SUBTITLE_NAMES` present in ``folder``."""
    return next((folder / n for n in SUBTITLE_NAMES if (folder / n).is_file()), None)


def dfew_clip_name(raw: str) -> str:
    """DFEW's clip name for a split file's ``video_name``: numbers are zero-padded to five
    digits (``1`` -> ``00001``, the names of DFEW's clip folders and videos); other names stay."""
    raw = raw.strip()
    return f"{int(raw):05d}" if raw.isdigit() else raw


def find_dfew_split(root: str | Path, fold: int, split: str) -> Path:
    """DFEW's split file of ``fold`` (1-5) and ``split`` (``train`` or ``test``) under ``root``:
    ``set_{fold}.csv`` (or ``{split}_set_{fold}.csv``) in a folder whose name starts with the
    split (``train(single-labeled)``); ``root`` is the DFEW folder, its ``EmoLabel_DataSplit``
    or the split folder itself."""
    root = Path(root)
    if split not in ("train", "test"):
        raise DataError(f"DFEW split must be 'train' or 'test', not {split!r}")
    if not 1 <= fold <= 5:
        raise DataError(f"DFEW fold must be 1..5, not {fold}")
    names = (f"set_{fold}.csv", f"{split}_set_{fold}.csv")
    found: list[Path] = []
    for base in (root, root / "EmoLabel_DataSplit"):
        if not base.is_dir():
            continue
        # Only the top of each folder is listed: a DFEW folder also holds ~16k clip folders.
        dirs = [base, *sorted(d for d in base.iterdir() if d.is_dir() and d.name.lower().startswith(split))]
        for d in dirs:
            in_split_dir = d.name.lower().startswith(split)
            for n in names:
                if (d / n).is_file() and (in_split_dir or n.startswith(split)) and d / n not in found:
                    found.append(d / n)
    if not found:
        raise DataError(
            f"{root}: no DFEW split file for fold {fold}, {split} "
            f"(expected EmoLabel_DataSplit/{split}(single-labeled)/set_{fold}.csv)"
        )
    # DFEW ships single-labelled splits; prefer them should other variants sit beside them.
    single = [p for p in found if "single" in p.parent.name.lower()]
    return (single or found)[0]


def read_dfew_split(path: str | Path) -> list[Clip]:
    """One DFEW split file (``video_name,label``; labels 1-7 as :data:`DFEW_LABELS`, or words);
    names as :func:`dfew_clip_name`."""
    clips = read_label_csv(path, DFEW_LABELS)
    return [Clip(dfew_clip_name(c.name), c.subtitle, c.label, c.valence) for c in clips]


def _label_from_number(label: str, numeric_labels: tuple[str, ...] | None, where: str) -> str:
    if numeric_labels is None:
        return label
    if not (label.isascii() and label.isdigit()):
        try:
            float(label)
        except ValueError:
            return label  # a label word
        raise DataError(f"{where}: label {label!r} is not a label number 1..{len(numeric_labels)}")
    k = int(label)
    if not 1 <= k <= len(numeric_labels):
        raise DataError(f"{where}: label number {k} outside 1..{len(numeric_labels)}")
    return numeric_labels[k - 1]


def read_classification_folder(
    folder: str | Path, numeric_labels: tuple[str, ...] | None = None, fold: str | None = None
) -> list[Clip]:
    folder = Path(folder)
    clips = read_ncev(find_labels_file(folder), numeric_labels)
    subs_path = folder / "subtitles.csv"
    subs = read_subtitles(subs_path) if subs_path.is_file() else {}
    return [Clip(c.name, subs.get(c.name, ""), c.label, c.valence, None, fold) for c in clips]


def read_fold_folders(
    root: str | Path, folds: Sequence[str], numeric_labels: tuple[str, ...] | None = None
) -> list[Clip]:
    """The clips of every folder of ``folds`` present under ``root`` (DFEW's ``fold1`` ..
    ``fold5``, each a classification folder), each clip with its fold; a ``root`` without any
    of them is a :class:`DataError`."""
    root = Path(root)
    present = [f for f in folds if (root / f).is_dir()]
    if not present:
        raise DataError(f"{root}: no fold folders ({', '.join(folds)})")
    return [c for f in present for c in read_classification_folder(root / f, numeric_labels, f)]


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None


def _read_text(path: Path) -> str:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # as csv counts lines (newline="": universal, untranslated)


_FIELD_END = re.compile(r"[,\r\n]")


def _line_at(text: str, pos: int) -> int:
    return len(_LINE_BREAK.findall(text, 0, pos)) + 1


def _check_quotes(path: Path, text: str) -> None:
    """Refuse a quote left open, which makes csv (lenient) swallow the lines after it into one
    field: a quoted field running to the end of the file, or one closing on a later line in the
    middle of a field. Fields are walked as csv's default dialect reads them (a field is quoted
    when it starts with ``"``; ``""`` inside is a quote); a quoted field that holds a line
    break and closes properly is legitimate and kept."""
    pos, n = 0, len(text)
    while pos < n:
        if text[pos] == '"':
            opened = pos
            close = text.find('"', pos + 1)
            while close >= 0 and text.startswith('"', close + 1):  # "" is a quote inside
                close = text.find('"', close + 2)
            if close < 0:
                raise DataError(
                    f"{path}:{_line_at(text, opened)}: unterminated quote: the quoted field opened on "
                    f"this line runs to the end of the file (line {_line_at(text, n)}), swallowing "
                    "every line after it"
                )
            pos = close + 1
            if pos < n and text[pos] not in ",\r\n" and _LINE_BREAK.search(text, opened, close):
                raise DataError(
                    f"{path}:{_line_at(text, opened)}: unterminated quote: the quoted field opened on "
                    f"this line closes on line {_line_at(text, close)} in the middle of a field, "
                    "swallowing the lines in between"
                )
        end = _FIELD_END.search(text, pos)
        if end is None:
            break
        pos = end.end()


def read_csv_table(path: Path) -> tuple[list[str], int, list[tuple[int, dict[str, str]]]]:
    """The header of a CSV file, its line, and the rows, each with the line it starts on. Blank
    rows are skipped; a row with another number of fields than the header (extra empty trailing
    fields aside) is a :class:`DataError` naming its line, as is a quote left open."""
    text = _read_text(path)
    _check_quotes(path, text)
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] = []
    header_line = 1
    rows: list[tuple[int, dict[str, str]]] = []
    end = 0
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if not header:
                header, header_line = list(fields), start
                while not header[-1].strip():  # trailing commas after the last column name
                    header.pop()
                continue
            if len(fields) > len(header) and not any(f.strip() for f in fields[len(header) :]):
                fields = fields[: len(header)]
            if len(fields) != len(header):
                span = f" (the row runs over lines {start}-{end})" if end > start else ""
                raise DataError(
                    f"{path}:{start}: {len(fields)} field(s) where the header ({','.join(header)}) has "
                    f"{len(header)}{span}"
                )
            rows.append((start, dict(zip(header, fields, strict=True))))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not a readable CSV ({exc})") from None
    return header, header_line, rows
