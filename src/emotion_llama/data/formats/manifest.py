"""The manifest: one plain CSV or JSONL file that lists your clips, for every command.

A row is a clip: ``path`` (the video; or ``name`` and a video root), and optionally ``label``,
``subtitle``, ``split``, ``valence``, ``speaker``, and ``start``/``end`` (seconds: a clip cut from a
longer video). :data:`MANIFEST_SCHEMA` is the JSON schema of a row (published in
docs/manifest.md); :func:`read_manifest` checks every row and names the file and line of the first
bad one; :func:`write_manifest` writes rows back (the dataset adapters write their datasets this
way). Conversions: :func:`manifest_clips` (benchmark clips for ``evaluate``),
:func:`link_manifest_videos` (a folder of one video per clip, named by the clip, for ``extract``
and ``annotate``; cut clips are cut there once) and :func:`read_manifest_samples` (training samples
from the clips' extracted features).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotion_llama.data.samples import Clip, DataError, ReadReport, TrainSample
from emotion_llama.files import jsonl_objects

if TYPE_CHECKING:
    from emotion_llama.config import EmotionLlamaConfig

#: The columns of a manifest, in the order :func:`write_manifest` writes them.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "name",
    "label",
    "subtitle",
    "split",
    "valence",
    "speaker",
    "start",
    "end",
)

#: The JSON schema of one manifest row (a JSONL line, or a CSV row with these column names).
MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "emotion-llama manifest row",
    "description": "One clip. CSV files use the same names as columns (a header row is required); "
    "empty cells are absent values. Other keys or columns are ignored.",
    "type": "object",
    "properties": {
        "path": {
            "type": "string",
            "description": "The video file; a relative path is relative to the video root "
            "(--video-root), else to the manifest's folder.",
        },
        "name": {
            "type": "string",
            "pattern": "^[^/\\\\]+$",
            "description": "The clip's name (its features, records and scores are filed under it). "
            "Default: the file's stem, with _START_END in milliseconds for a cut clip. With no "
            "path, the video is NAME.* in the video root.",
        },
        "label": {"type": "string", "minLength": 1, "description": "The emotion, in any words."},
        "subtitle": {"type": "string", "description": "What the person says (any language)."},
        "split": {"type": "string", "description": "train, val, test or any name of a subset."},
        "valence": {"type": "number", "description": "Valence or sentiment score (e.g. -3..3)."},
        "speaker": {"type": "string", "description": "Who speaks (a speaker id)."},
        "start": {"type": "number", "minimum": 0, "description": "Seconds into the video."},
        "end": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds; after start."},
    },
    "anyOf": [{"required": ["path"]}, {"required": ["name"]}],
}

_VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv")


@dataclass(frozen=True)
class ManifestEntry:
    """One clip of a manifest. ``path`` is absolute once read (``None``: not given and not found,
    for commands that need no video, such as ``evaluate``)."""

    name: str
    path: Path | None = None
    label: str | None = None
    subtitle: str | None = None
    split: str | None = None
    valence: float | None = None
    speaker: str | None = None
    start: float | None = None
    end: float | None = None
    #: Where the row was read (``file:line``); empty for rows made in code.
    where: str = ""

    @property
    def is_cut(self) -> bool:
        return self.start is not None or self.end is not None

    def to_row(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The row as written: absent values left out; ``path`` relative to ``relative_to`` when
        given and below it, else absolute."""
        row: dict[str, Any] = {}
        if self.path is not None:
            path = Path(os.path.abspath(self.path))
            if relative_to is not None:
                base = Path(os.path.abspath(relative_to))
                if path.is_relative_to(base):
                    path = path.relative_to(base)
            row["path"] = path.as_posix()
        row["name"] = self.name
        for key in MANIFEST_COLUMNS[2:]:
            value = getattr(self, key)
            if value is not None:
                row[key] = value
        return row


# -- reading -----------------------------------------------------------------------------------------
def read_manifest(
    path: str | Path, *, video_root: str | Path | None = None, split: str | None = None
) -> list[ManifestEntry]:
    """The rows of a CSV (``.csv``; ``.tsv`` with tabs) or JSONL (``.jsonl``, ``.json`` with one
    object per line) manifest, checked. ``split`` keeps the rows of that split. Raises
    :class:`DataError` naming ``file:line`` for a bad row or two rows with one name. Videos are
    not opened here: a missing one fails that clip alone where a video is needed
    (:func:`link_manifest_videos`), and nothing where only features are (training, scoring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such manifest file")
    base = Path(video_root) if video_root is not None else path.parent
    if video_root is not None and not base.is_dir():
        raise DataError(f"{base}: the video root is not a folder")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows = _jsonl_rows(path, text) if path.suffix.lower() in (".jsonl", ".json") else _csv_rows(path, text)
    by_stem = _videos_by_stem(base)
    entries: list[ManifestEntry] = []
    seen: dict[str, str] = {}
    for where, row in rows:
        entry = _entry(row, where, base, by_stem)
        if entry.name in seen:
            raise DataError(f"{where}: the clip name {entry.name!r} is also on {seen[entry.name]}")
        seen[entry.name] = where
        entries.append(entry)
    if not entries:
        raise DataError(f"{path}: no rows")
    if split is not None:
        splits = sorted({e.split for e in entries if e.split})
        entries = [e for e in entries if e.split == split]
        if not entries:
            raise DataError(
                f"{path}: no rows of split {split!r} (splits: {', '.join(splits) or 'none given'})"
            )
    return entries


def _csv_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty file (a header row is needed: path or name, ...)") from None
    except csv.Error as exc:
        raise DataError(f"{path}:1: not a CSV header ({exc})") from None
    columns = [c.strip().lower() for c in header]
    if "path" not in columns and "name" not in columns:
        raise DataError(
            f"{path}:1: the header has neither a 'path' nor a 'name' column (it has: {', '.join(header)})"
        )
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        for cells in reader:
            where = f"{path}:{reader.line_num}"
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(columns):
                raise DataError(f"{where}: {len(cells)} cells for {len(columns)} columns (a quote missing?)")
            rows.append((where, {k: v for k, v in zip(columns, cells, strict=False) if v.strip()}))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    return rows


def _jsonl_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path}:{i}", {str(k).lower(): v for k, v in obj.items() if v is not None and v != ""})
        for i, obj in jsonl_objects(path, text, error=DataError)
    ]


def _videos_by_stem(root: Path) -> dict[str, Path]:
    """The videos directly in ``root`` by stem (first by sorted name when two share one)."""
    found: dict[str, Path] = {}
    try:
        for p in sorted(root.iterdir()):
            if p.suffix.lower() in _VIDEO_SUFFIXES:
                found.setdefault(p.stem, p)
    except OSError:
        pass
    return found


def _text(row: Mapping[str, Any], key: str, where: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(f"{where}: {key!r} must be text, got {type(value).__name__}")
    text = str(value).strip()
    return text or None


def _number(row: Mapping[str, Any], key: str, where: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise DataError(f"{where}: {key!r} must be a number, got {value!r}")
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {key!r} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise DataError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return number


def _entry(row: Mapping[str, Any], where: str, base: Path, by_stem: Mapping[str, Path]) -> ManifestEntry:
    path_text = _text(row, "path", where)
    name = _text(row, "name", where)
    start, end = _number(row, "start", where), _number(row, "end", where)
    if start is not None and start < 0:
        raise DataError(f"{where}: 'start' must be >= 0, got {start:g}")
    if end is not None and end <= (start or 0.0):
        raise DataError(f"{where}: 'end' ({end:g}) must come after 'start' ({start or 0.0:g})")
    video: Path | None = None
    if path_text is not None:
        video = Path(path_text).expanduser()
        video = Path(os.path.abspath(video if video.is_absolute() else base / video))
        if name is None:
            name = video.stem
            if start is not None or end is not None:
                name += f"_{round((start or 0.0) * 1000)}_{'end' if end is None else round(end * 1000)}"
    elif name is None:
        raise DataError(f"{where}: needs a 'path' or a 'name'")
    else:
        video = by_stem.get(name)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise DataError(f"{where}: {name!r} cannot be a clip name (it names files); give another 'name'")
    return ManifestEntry(
        name=name,
        path=video,
        label=_text(row, "label", where),
        subtitle=_text(row, "subtitle", where),
        split=_text(row, "split", where),
        valence=_number(row, "valence", where),
        speaker=_text(row, "speaker", where),
        start=start,
        end=end,
        where=where,
    )


# -- writing -----------------------------------------------------------------------------------------
def write_manifest(entries: Iterable[ManifestEntry], path: str | Path, *, relative: bool = True) -> Path:
    """Write ``entries`` as CSV (``.csv``, ``.tsv``) or JSONL (``.jsonl``), atomically. With
    ``relative``, video paths below the manifest's folder are written relative to it (the folder
    can move), others absolute."""
    from emotion_llama.files import atomic_write_text

    path = Path(path)
    base = path.parent if relative else None
    rows = [e.to_row(base) for e in entries]
    if path.suffix.lower() in (".jsonl", ".json"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        buf = io.StringIO()
        used = [c for c in MANIFEST_COLUMNS if any(c in r for r in rows)]
        writer = csv.DictWriter(
            buf, used, delimiter="\t" if path.suffix.lower() == ".tsv" else ",", lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    return atomic_write_text(path, text)


# -- conversions -------------------------------------------------------------------------------------
def manifest_clips(entries: Sequence[ManifestEntry]) -> list[Clip]:
    """The rows as benchmark clips (name, subtitle, label, valence) for ``evaluate``."""
    return [Clip(e.name, e.subtitle or "", e.label, e.valence) for e in entries]


def manifest_subtitles(entries: Sequence[ManifestEntry]) -> dict[str, str]:
    """``{name: subtitle}`` of the rows that give one (they replace speech recognition)."""
    return {e.name: e.subtitle for e in entries if e.subtitle}


def manifest_labels(entries: Sequence[ManifestEntry]) -> dict[str, str]:
    """``{name: label}`` of the labelled rows."""
    return {e.name: e.label for e in entries if e.label}


def link_manifest_videos(
    entries: Sequence[ManifestEntry], folder: str | Path
) -> tuple[Path, list[tuple[str, str]]]:
    """A folder of one video per clip, ``NAME.ext``: a symbolic link to each whole video, and each
    cut clip (``start``/``end``) cut once with ffmpeg (kept for reruns). Returns the folder and the
    clips that could not be placed, ``(where or name, why)``: no video, or a cut ffmpeg refused."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    problems: list[tuple[str, str]] = []
    for e in entries:
        label = e.where or e.name
        if e.path is None:
            problems.append((label, f"no video for {e.name!r} (give 'path', or NAME.* in the video root)"))
            continue
        if not e.path.is_file():
            problems.append((label, f"no such video {e.path}"))
            continue
        if not e.is_cut:
            target = folder / f"{e.name}{e.path.suffix.lower()}"
            if target.is_symlink() or target.exists():
                if target.resolve() == e.path.resolve():
                    continue
                target.unlink()
            target.symlink_to(e.path)
            continue
        target = folder / f"{e.name}.mp4"
        if target.is_file() and target.stat().st_size > 0:
            continue
        why = _cut(e.path, e.start or 0.0, e.end, target)
        if why:
            problems.append((label, why))
    return folder, problems


def _cut(video: Path, start: float, end: float | None, out: Path) -> str | None:
    """Re-encode ``video`` from ``start`` to ``end`` into ``out`` (exact to the frame); the reason
    it failed, or ``None``."""
    from emotion_llama.files import atomic_output

    cmd = ["ffmpeg", "-v", "error", "-y", "-ss", f"{start:.3f}", "-i", str(video)]
    if end is not None:
        cmd += ["-t", f"{end - start:.3f}"]
    try:
        with atomic_output(out) as tmp:
            cmd += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac"]
            cmd += ["-f", "mp4", str(tmp)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if done.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
                lines = (done.stderr or "").strip().splitlines()
                raise DataError(lines[-1] if lines else f"ffmpeg exit code {done.returncode}")
    except FileNotFoundError:
        return "ffmpeg is not installed (needed to cut clips with start/end)"
    except (DataError, subprocess.TimeoutExpired) as exc:
        return f"cannot cut {video.name} at {start:g}-{'end' if end is None else f'{end:g}'} s ({exc})"
    return None


def read_manifest_samples(
    path: str | Path,
    config: EmotionLlamaConfig,
    *,
    features: str | Path | None = None,
    split: str | None = None,
    video_root: str | Path | None = None,
    report: ReadReport | None = None,
) -> list[TrainSample]:
    """Emotion samples (``label`` -> the label as target) from a manifest whose clips' features
    were extracted (``extract MANIFEST --out FEATURES``; ``features`` defaults to the manifest's
    folder). The global frame is the store's, else the clip's video when it is not cut. Unlabelled
    rows are counted, clips without features reported and skipped (never zero-filled)."""
    from emotion_llama.data.formats.clips import ClipResolver, label_target, open_feature_store

    path = Path(path)
    entries = read_manifest(path, video_root=video_root, split=split)
    report = report if report is not None else ReadReport(f"manifest {path}")
    store = open_feature_store(features if features is not None else path.parent, config)
    resolver = ClipResolver(store, report, frame_roots=[path.parent])
    samples: list[TrainSample] = []
    for e in entries:
        if e.label is None:
            report.unlabelled += 1
            continue
        target = label_target(e.label, e.where)
        frame = (
            e.path if e.path is not None and not e.is_cut and not store.frame_path(e.name).is_file() else None
        )
        found = resolver.get(e.name, frame)
        if found is None:
            continue
        feats, frame_path = found
        samples.append(TrainSample(e.name, e.subtitle or "", "emotion", target, frame_path, feats))
    resolver.finish(samples)
    return samples
