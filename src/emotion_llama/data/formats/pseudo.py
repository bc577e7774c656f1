"""Pseudo-label lists as training samples (SPEC 4: the extra stage-1 run on about 70k MER2023
clips labelled by a model): CSV/TSV, JSON or text, with or without confidences."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.data.formats.clips import (
    ClipResolver,
    emotion_samples,
    label_target,
    open_feature_store,
    subtitles_for,
)
from emotion_llama.data.samples import ReadReport, TrainDataError, TrainSample

log = logging.getLogger(__name__)


#: Accepted columns of a pseudo-label CSV (first match wins).
PSEUDO_NAME_COLUMNS = ("name", "video_name", "video", "clip", "clip_name")


PSEUDO_LABEL_COLUMNS = ("pseudo_label", "pseu_emotion", "label", "emotion", "discrete", "pred", "prediction")


PSEUDO_CONFIDENCE_COLUMNS = ("confidence", "conf", "score", "prob", "probability")


def read_pseudo_labels(
    path: str | Path,
    config: EmotionLlamaConfig,
    *,
    features: str | Path | None = None,
    subtitles: str | Path | None = None,
    min_confidence: float | None = None,
    report: ReadReport | None = None,
) -> list[TrainSample]:
    """Emotion samples from a pseudo-label list (SPEC 4: the extra stage-1 run on about 70k
    MER2023 clips labelled by a model).

    Accepted files:

    - CSV (``.csv``; ``.tsv`` with tabs) with a header: the clip in ``name``, ``video_name``,
      ``video``, ``clip`` or ``clip_name``; the label in ``pseudo_label``, ``pseu_emotion``,
      ``label``, ``emotion``, ``discrete``, ``pred`` or ``prediction``; optionally the confidence
      in ``confidence``, ``conf``, ``score``, ``prob`` or ``probability`` (first match wins);
    - JSON: ``{name: label}`` or ``{name: {label column: ..., confidence column: ...}}`` with
      the same column names as keys (MERR's ``pseu_emotion`` included);
    - text, one clip per line: ``name label [confidence]``, or an NCEV line ``name frame_count
      label [valence]`` (no confidence); blank lines and lines starting with ``#`` are skipped.

    With ``min_confidence``, clips whose confidence is below it are dropped (counted as
    ``filtered``); a list without confidences is kept whole, with a warning. A clip listed twice
    with different labels is an error naming both lines.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainDataError(f"{path}: no such pseudo-label file")
    report = report if report is not None else ReadReport(f"pseudo {path}")
    entries, has_confidence = _read_pseudo_entries(path)
    if min_confidence is not None and not has_confidence:
        note = f"{path}: no confidence column, min_confidence={min_confidence} not applied"
        log.warning("%s", note)
        report.notes.append(note)
    rows: list[tuple[str, str]] = []
    for name, (_where, target, confidence) in entries.items():
        if min_confidence is not None and confidence is not None and confidence < min_confidence:
            report.filtered += 1
            continue
        rows.append((name, target))
    subs = subtitles_for(subtitles, path.parent)
    store = open_feature_store(features if features is not None else path.parent, config)
    resolver = ClipResolver(store, report, frame_roots=[path.parent])
    samples = emotion_samples(rows, resolver, subs)
    resolver.finish(samples)
    return samples


def _read_pseudo_entries(path: Path) -> tuple[dict[str, tuple[str, str, float | None]], bool]:
    """``{name: (where, normalised label, confidence)}`` in file order, and whether the file has
    confidences."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _pseudo_from_table(path, "\t" if suffix == ".tsv" else ",")
    if suffix == ".json":
        return _pseudo_from_json(path)
    return _pseudo_from_text(path)


def _add_entry(
    entries: dict[str, tuple[str, str, float | None]],
    name: str,
    label: str,
    confidence: float | None,
    where: str,
) -> None:
    if not name:
        raise TrainDataError(f"{where}: empty clip name")
    target = label_target(label, where)
    old = entries.get(name)
    if old is not None:
        if old[1] != target:
            raise TrainDataError(
                f"{where}: clip {name!r} again, with label {target!r} ({old[0]}: {old[1]!r})"
            )
        return
    entries[name] = (where, target, confidence)


def _confidence(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TrainDataError(f"{where}: confidence {text!r} is not a number") from None
    if value != value:  # NaN
        raise TrainDataError(f"{where}: confidence is NaN")
    return value


def _pseudo_from_table(path: Path, delimiter: str) -> tuple[dict[str, tuple[str, str, float | None]], bool]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            cols = [c.strip() for c in reader.fieldnames or []]
            by_lower = {c.lower(): c for c in cols}
            name_col = next((by_lower[c] for c in PSEUDO_NAME_COLUMNS if c in by_lower), None)
            label_col = next((by_lower[c] for c in PSEUDO_LABEL_COLUMNS if c in by_lower), None)
            conf_col = next((by_lower[c] for c in PSEUDO_CONFIDENCE_COLUMNS if c in by_lower), None)
            if name_col is None or label_col is None:
                raise TrainDataError(
                    f"{path}:1: needs a clip column ({', '.join(PSEUDO_NAME_COLUMNS)}) and a label column "
                    f"({', '.join(PSEUDO_LABEL_COLUMNS)}); the header has {', '.join(cols) or 'nothing'}"
                )
            entries: dict[str, tuple[str, str, float | None]] = {}
            for row in reader:
                where = f"{path}:{reader.line_num}"
                row = {(k or "").strip(): v for k, v in row.items()}
                label = (row.get(label_col) or "").strip()
                if not label:
                    raise TrainDataError(f"{where}: empty {label_col}")
                conf = _confidence((row.get(conf_col) or "").strip(), where) if conf_col else None
                _add_entry(entries, (row.get(name_col) or "").strip(), label, conf, where)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise TrainDataError(f"{path}: not a readable CSV ({exc})") from None
    return entries, conf_col is not None


def _pseudo_from_json(path: Path) -> tuple[dict[str, tuple[str, str, float | None]], bool]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainDataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TrainDataError(f"{path}: expected a JSON object keyed by clip name")
    entries: dict[str, tuple[str, str, float | None]] = {}
    has_conf = False
    for name, value in data.items():
        where = f"{path} (clip {name!r})"
        conf: float | None = None
        if isinstance(value, str):
            label = value
        elif isinstance(value, dict):
            key = next((k for k in PSEUDO_LABEL_COLUMNS if isinstance(value.get(k), str)), None)
            if key is None:
                raise TrainDataError(f"{where}: no label ({', '.join(PSEUDO_LABEL_COLUMNS)})")
            label = value[key]
            ckey = next((k for k in PSEUDO_CONFIDENCE_COLUMNS if value.get(k) is not None), None)
            if ckey is not None:
                conf = _confidence(str(value[ckey]), where)
                has_conf = True
        else:
            raise TrainDataError(f"{where}: expected a label or an object, got {type(value).__name__}")
        _add_entry(entries, str(name).strip(), label, conf, where)
    return entries, has_conf


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _pseudo_from_text(path: Path) -> tuple[dict[str, tuple[str, str, float | None]], bool]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise TrainDataError(f"{path}: not UTF-8 text ({exc})") from None
    entries: dict[str, tuple[str, str, float | None]] = {}
    has_conf = False
    for i, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        where = f"{path}:{i}"
        if i == 1 and parts[0].lower() in PSEUDO_NAME_COLUMNS and not _is_number(parts[-1]):
            continue  # a header line
        if len(parts) >= 3 and parts[1].isdigit() and not _is_number(parts[2]):
            _add_entry(entries, parts[0], parts[2], None, where)  # NCEV
        elif len(parts) in (2, 3) and not _is_number(parts[1]):
            conf = _confidence(parts[2], where) if len(parts) == 3 else None
            has_conf = has_conf or conf is not None
            _add_entry(entries, parts[0], parts[1], conf, where)
        else:
            raise TrainDataError(
                f"{where}: expected 'name label [confidence]' or 'name frame_count label [valence]', "
                f"got {line!r}"
            )
    return entries, has_conf
