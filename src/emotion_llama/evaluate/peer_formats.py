"""Prediction files: the project's ``predictions.jsonl`` (its schema) and the files other projects
write, read as the project's records so that ``score`` can rescore old runs.

Formats (``--format``):

``project``
    ``predictions.jsonl`` as ``evaluate`` writes it (:data:`PREDICTION_SCHEMA`, docs/predictions.md).
``affectgpt``
    AffectGPT / MER-UniBench: an ``.npz`` with ``filenames`` and ``fileitems`` (the ``-openset.npz``
    word lists, or the ``-sentiment.npz`` answers), an ``.npz`` with ``name2reason`` (a dict of
    descriptions), or a ``.csv`` with a ``name`` column and an ``openset`` (word list) and/or
    ``reason`` column. They carry no golds: give them with ``--gold`` (:func:`read_gold_file`).
``emotion-llama-v2``
    Emotion-LLaMA-v2's JSONL: one object a line with ``video_id``, ``response`` (or
    ``new_response``), ``answer`` (the gold) and ``mode`` (the split).

Readers never stop at a bad row: a row that cannot be read is left out and named
(``file:line: why``) in :attr:`PredictionFile.problems`, so the other rows still get scored and the
caller reports the problems (``score`` prints them and exits with code 1). A file that cannot be
read at all (not an archive, no known columns) is a :class:`DataError`.

NumPy archives are read without unpickling arbitrary objects: an object array (AffectGPT's
``name2reason`` dict) is rebuilt by an unpickler that only knows numpy arrays, dtypes and plain
Python containers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotion_llama.data.samples import DataError
from emotion_llama.evaluate.openvocab import split_labels

__all__ = [
    "FORMATS",
    "PREDICTION_SCHEMA",
    "PredictionFile",
    "attach_golds",
    "detect_format",
    "keep_split",
    "read_gold_file",
    "read_prediction_file",
]

#: The values of ``--format`` (``auto`` tells them apart by suffix and content).
FORMATS: tuple[str, ...] = ("auto", "project", "affectgpt", "emotion-llama-v2")

#: The JSON schema of one line of ``predictions.jsonl`` (published in docs/predictions.md).
PREDICTION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "emotion-llama prediction record",
    "description": "One line of predictions.jsonl: one clip's answer, with what it is scored against. "
    "Other keys are ignored.",
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "description": "The clip's name."},
        "output": {"type": "string", "description": "The model's answer (greedy decoding)."},
        "fold": {"type": "string", "description": "DFEW: the clip's fold (fold1 .. fold5)."},
        "split": {
            "type": "string",
            "description": "The subset the clip belongs to (Emotion-LLaMA-v2's mode); score --split "
            "keeps one.",
        },
        "gold": {
            "anyOf": [
                {"type": "string"},
                {"type": "number"},
                {"type": "array", "items": {"type": "string"}},
            ],
            "description": "The gold answer: an emotion label (a list string such as \"['happy']\" "
            "is split), a sentiment word (positive, negative, neutral) or score (MOSI/MOSEI -3..3, "
            "SIMS -1..1; 0 is neutral), or for the hit rate a list of emotion words.",
        },
        "valence": {
            "type": "number",
            "description": "The gold valence (MER2023) or sentiment score (MOSI, MOSEI, SIMS); for "
            "a sentiment benchmark it is the gold when given.",
        },
        "pred_valence": {
            "type": "number",
            "description": "A predicted valence: with it on every record, MER2023's combined score "
            "(weighted F1 - 0.25 x valence MSE) is added; for a sentiment benchmark it is the "
            "prediction (its sign), as MERBench scores regressors.",
        },
        "reference": {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            "description": "EMER: the reference description; open vocabulary: the gold emotion "
            'words (a list, or a list string such as "[happy, relieved]"). An empty one is '
            "skipped and counted in the report.",
        },
        "words": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Emotion words already extracted from the answer (AffectGPT's openset): "
            "used for the open-vocabulary score and the hit rate instead of asking the judge.",
        },
    },
    "required": ["name", "output"],
}

_PREDICTION_COLUMNS = ("openset", "reason")


@dataclass
class PredictionFile:
    """What a prediction file held: its records, the format read, the rows left out (each
    ``file:line: why``) and notes on what was done (a cut-off last line left out...)."""

    records: list[dict[str, Any]]
    format: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- detection ---------------------------------------------------------------------------------------
def detect_format(path: str | Path) -> str:
    """``project``, ``affectgpt`` or ``emotion-llama-v2`` for a file: ``.npz`` and ``.csv`` are
    AffectGPT's; a JSON-lines file is Emotion-LLaMA-v2's when its first object has ``video_id``,
    the project's when it has ``name``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".csv"):
        return "affectgpt"
    with open(path, "rb") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                first = json.loads(line)
            except ValueError:
                if i >= 20:
                    break
                continue
            if isinstance(first, dict) and "video_id" in first:
                return "emotion-llama-v2"
            if isinstance(first, dict) and "name" in first:
                return "project"
            break
    raise DataError(
        f"{path}: cannot tell its format (a JSONL line with 'name' is the project's, with "
        f"'video_id' Emotion-LLaMA-v2's; .npz and .csv are AffectGPT's); give --format"
    )


def read_prediction_file(path: str | Path, fmt: str = "auto") -> PredictionFile:
    """The records of a prediction file in any of :data:`FORMATS`."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown prediction format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "project":
        from emotion_llama.evaluate.runner import read_predictions

        notes: list[str] = []
        return PredictionFile(read_predictions(path, notes=notes), "project", notes=notes)
    if fmt == "emotion-llama-v2":
        return _read_emotion_llama_v2(path)
    if path.suffix.lower() == ".npz":
        return _read_affectgpt_npz(path)
    return _read_affectgpt_csv(path)


# -- Emotion-LLaMA-v2 ----------------------------------------------------------------------------------
def _read_emotion_llama_v2(path: Path) -> PredictionFile:
    """``{"video_id", "response" | "new_response", "answer", "mode"}`` lines. The answer text is
    ``new_response`` when present (as its sentiment script takes it), else ``response``; the
    emotion words are ``response`` as its hit-rate script reads it (``"[" + response + "]"`` split
    on commas and quotes); ``answer`` is the gold, ``mode`` the split."""
    out = PredictionFile([], "emotion-llama-v2")
    seen: dict[str, str] = {}
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            cut = i == len(lines)  # no newline after it: cut off while being written
            out.problems.append(f"{where}: {'cut-off last line' if cut else 'not JSON'} ({exc})")
            continue
        if not isinstance(obj, dict):
            out.problems.append(f"{where}: not a JSON object")
            continue
        name = obj.get("video_id")
        if not isinstance(name, str) or not name:
            out.problems.append(f"{where}: no 'video_id' (a non-empty string)")
            continue
        response = obj.get("response")
        if response is None and "new_response" not in obj:
            out.problems.append(f"{where}: no 'response'")
            continue
        text = obj.get("new_response", response)
        if not isinstance(text, str) or not isinstance(response, str | None):
            out.problems.append(f"{where}: 'response' and 'new_response' must be strings")
            continue
        rec: dict[str, Any] = {"name": name, "output": text, "_line": i}
        if response is not None:
            rec["words"] = split_labels(f"[{response}]")
        answer = obj.get("answer")
        if isinstance(answer, str):
            rec["gold"] = answer.strip()
        elif isinstance(answer, int | float) and not isinstance(answer, bool) and math.isfinite(answer):
            rec["gold"] = float(answer)
        elif answer is not None:
            out.problems.append(f"{where}: 'answer' {answer!r} is neither a string nor a number")
            continue
        mode = obj.get("mode")
        if mode is not None:
            rec["split"] = str(mode)
        # a name may come once per mode (MELD numbers its dialogues per split)
        key = name if mode is None else f"{name} (mode {mode})"
        if _unique(key, f"line {i}", seen, out.problems, where):
            out.records.append(rec)
    return out


# -- AffectGPT -------------------------------------------------------------------------------------------
def _read_affectgpt_npz(path: Path) -> PredictionFile:
    arrays = _npz_arrays(path)
    out = PredictionFile([], "affectgpt")
    if "filenames" in arrays and "fileitems" in arrays:
        names, items = arrays["filenames"], arrays["fileitems"]
        if names.ndim != 1 or items.ndim != 1 or len(names) != len(items):
            raise DataError(
                f"{path}: 'filenames' and 'fileitems' must be two lists of one length "
                f"(shapes {names.shape} and {items.shape})"
            )
        pairs: Iterable[tuple[Any, Any]] = zip(names.tolist(), items.tolist(), strict=True)
        seen: dict[str, str] = {}
        for i, (name, item) in enumerate(pairs, start=1):
            where = f"{path}:item {i}"
            if not _name_ok(name, where, out.problems) or not _unique(
                name, f"item {i}", seen, out.problems, where
            ):
                continue
            if not isinstance(item, str):
                out.problems.append(f"{where}: fileitems entry for {name!r} is not text ({item!r})")
                continue
            out.records.append(
                {"name": name, "output": item, "words": split_labels(item), "_line": f"item {i}"}
            )
        return out
    if "name2reason" in arrays:
        value = arrays["name2reason"]
        mapping = value.item() if value.shape == () else None
        if not isinstance(mapping, dict):
            raise DataError(f"{path}: 'name2reason' is not a dict of clip name -> description")
        for i, (name, reason) in enumerate(mapping.items(), start=1):
            where = f"{path}:item {i}"
            if not _name_ok(name, where, out.problems):
                continue
            if not isinstance(reason, str):
                out.problems.append(f"{where}: the description of {name!r} is not text ({reason!r})")
                continue
            out.records.append({"name": name, "output": reason, "_line": f"item {i}"})
        return out
    raise DataError(
        f"{path}: an AffectGPT npz holds 'filenames' and 'fileitems', or 'name2reason'; this one has "
        f"{', '.join(sorted(arrays)) or 'nothing'}"
    )


def _read_affectgpt_csv(path: Path) -> PredictionFile:
    rows, columns = _csv_rows(path)
    name_col = _column(columns, ("name", "names"))
    if name_col is None or not any(c in columns for c in _PREDICTION_COLUMNS):
        raise DataError(
            f"{path}: an AffectGPT CSV has a 'name' column and an 'openset' and/or 'reason' column; "
            f"its columns are {', '.join(columns)}"
        )
    out = PredictionFile([], "affectgpt")
    seen: dict[str, str] = {}
    for line, row in rows:
        where = f"{path}:{line}"
        if row is None:
            out.problems.append(f"{where}: more fields than the header has")
            continue
        name = row.get(name_col, "").strip()
        if not _name_ok(name, where, out.problems) or not _unique(
            name, f"line {line}", seen, out.problems, where
        ):
            continue
        rec: dict[str, Any] = {"name": name, "_line": line}
        if "openset" in columns:
            rec["words"] = split_labels(row.get("openset", ""))
        rec["output"] = row.get("reason", "") if "reason" in columns else row.get("openset", "")
        out.records.append(rec)
    return out


def _name_ok(name: Any, where: str, problems: list[str]) -> bool:
    if isinstance(name, str) and name.strip():
        return True
    problems.append(f"{where}: no clip name ({name!r})")
    return False


def _unique(name: str, index: str, seen: dict[str, str], problems: list[str], where: str) -> bool:
    """True the first time ``name`` is met (recording where), else a problem naming the first."""
    if name in seen:
        problems.append(f"{where}: {name!r} again (first at {seen[name]}); kept the first")
        return False
    seen[name] = index
    return True


# -- golds -------------------------------------------------------------------------------------------
#: Gold-file columns: the name, the open-vocabulary words, a label, a valence or sentiment score.
_NAME_COLUMNS = ("name", "names", "video_id")
_LABEL_COLUMNS = ("emo", "emotion", "label", "gold", "answer")
_SCORE_COLUMNS = ("val", "valence", "score", "sentiment")


def read_gold_file(path: str | Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Golds by clip name for prediction files that carry none, and the rows left out
    (``file:line: why``).

    A CSV with a ``name`` (or ``names``) column and any of: ``openset`` (the open-vocabulary words
    -> ``reference``), ``emo``/``emotion``/``label``/``gold``/``answer`` (-> ``gold``),
    ``val``/``valence``/``score``/``sentiment`` (a number -> ``valence``). Or an ``.npz``: AffectGPT's
    label file (``test_corpus``: name -> ``{"emo": ..., "val": ...}``), or one text entry per clip
    (name -> label, as Emotion-LLaMA-v2's ``hitrate_gt`` files)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such gold file")
    if path.suffix.lower() == ".npz":
        return _npz_golds(path)
    rows, columns = _csv_rows(path)
    name_col = _column(columns, _NAME_COLUMNS)
    label_col = _column(columns, _LABEL_COLUMNS)
    score_col = _column(columns, _SCORE_COLUMNS)
    if name_col is None or (label_col is None and score_col is None and "openset" not in columns):
        raise DataError(
            f"{path}: a gold CSV has a 'name' column and an 'openset', label ({', '.join(_LABEL_COLUMNS)}) "
            f"or score ({', '.join(_SCORE_COLUMNS)}) column; its columns are {', '.join(columns)}"
        )
    golds: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for line, row in rows:
        where = f"{path}:{line}"
        if row is None:
            problems.append(f"{where}: more fields than the header has")
            continue
        name = row.get(name_col, "").strip()
        if not name:
            problems.append(f"{where}: no clip name")
            continue
        if name in golds:
            problems.append(f"{where}: {name!r} again; kept the first")
            continue
        gold: dict[str, Any] = {}
        if "openset" in columns:
            gold["reference"] = split_labels(row.get("openset", ""))
        if label_col is not None and row.get(label_col, "").strip():
            gold["gold"] = row[label_col].strip()
        if score_col is not None and row.get(score_col, "").strip():
            text = row[score_col].strip()
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                problems.append(f"{where}: {score_col} {text!r} is not a finite number")
                continue
            gold["valence"] = value
        golds[name] = gold
    return golds, problems


def _npz_golds(path: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    arrays = _npz_arrays(path)
    golds: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    if "test_corpus" in arrays:
        corpus = arrays["test_corpus"].item() if arrays["test_corpus"].shape == () else None
        if not isinstance(corpus, dict):
            raise DataError(f"{path}: 'test_corpus' is not a dict of clip name -> labels")
        for i, (name, entry) in enumerate(corpus.items(), start=1):
            where = f"{path}:test_corpus item {i}"
            if not isinstance(name, str) or not isinstance(entry, dict):
                problems.append(f"{where}: not a clip name with a dict of labels")
                continue
            gold: dict[str, Any] = {}
            emo, val = entry.get("emo"), entry.get("val")
            if isinstance(emo, str):
                gold["gold"] = emo
            elif emo is not None:
                problems.append(f"{where}: the emotion of {name!r} is {emo!r}, not a word")
                continue
            if isinstance(val, int | float) and not isinstance(val, bool) and math.isfinite(val):
                gold["valence"] = float(val)
            if gold:
                golds[name] = gold
        return golds, problems
    for i, (name, value) in enumerate(sorted(arrays.items()), start=1):
        item = value.item() if value.shape == () else None
        if isinstance(item, str):
            golds[name] = {"gold": item}
        else:
            problems.append(f"{path}:entry {i}: {name!r} is not one text label ({value.shape} {value.dtype})")
    if not golds:
        raise DataError(f"{path}: no gold labels (expected 'test_corpus', or one text label per clip)")
    return golds, problems


def attach_golds(
    records: Sequence[dict[str, Any]], golds: dict[str, dict[str, Any]], gold_file: str | Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """The records with their golds from :func:`read_gold_file` (its values replace the records'
    own) and warnings: records whose clip the gold file lacks are left out, clips of the gold file
    without a prediction are counted (AffectGPT scores every gold clip, so its number needs them
    all)."""
    kept = [{**r, **golds[r["name"]]} for r in records if r["name"] in golds]
    warnings = []
    lacking = [r["name"] for r in records if r["name"] not in golds]
    if lacking:
        warnings.append(
            f"{len(lacking)} prediction(s) have no gold in {gold_file} and are left out: "
            + ", ".join(lacking[:5])
            + (" ..." if len(lacking) > 5 else "")
        )
    predicted = {r["name"] for r in records}
    missing = [n for n in golds if n not in predicted]
    if missing:
        warnings.append(
            f"{len(missing)} clip(s) of {gold_file} have no prediction (not scored): "
            + ", ".join(missing[:5])
            + (" ..." if len(missing) > 5 else "")
        )
    return kept, warnings


def keep_split(records: Sequence[dict[str, Any]], split: str, source: str | Path) -> list[dict[str, Any]]:
    """The records whose ``split`` (Emotion-LLaMA-v2's ``mode``) is ``split``; none is a
    :class:`DataError` naming the splits there are."""
    kept = [r for r in records if r.get("split") == split]
    if not kept:
        there = sorted({str(r["split"]) for r in records if r.get("split") is not None})
        raise DataError(
            f"{source}: no prediction of split {split!r} "
            + (f"(its splits: {', '.join(there)})" if there else "(its records name no split)")
        )
    return kept


# -- CSV and npz -------------------------------------------------------------------------------------
def _column(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in columns), None)


def _csv_rows(path: Path) -> tuple[list[tuple[int, dict[str, str] | None]], list[str]]:
    """``(line, row)`` pairs (``row`` ``None`` when it has more fields than the header) and the
    lower-cased, stripped column names."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty CSV (no header)")
        columns = [c.strip().lower() for c in header]
        rows: list[tuple[int, dict[str, str] | None]] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(columns) and any(cell.strip() for cell in row[len(columns) :]):
                rows.append((reader.line_num, None))
                continue
            rows.append(
                (reader.line_num, {c: (row[i] if i < len(row) else "") for i, c in enumerate(columns)})
            )
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: {exc}") from None
    return rows, columns


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy object arrays of plain Python values; refuses every other global."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        (module, name): obj
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name, obj in (
            ("_reconstruct", np.empty(0).__reduce__()[0]),
            ("scalar", np.float64(0).__reduce__()[0]),
        )
    } | {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}") from None


def _read_npy(data: bytes, where: str) -> np.ndarray:
    fh = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            _, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            _, _, dtype = np.lib.format.read_array_header_2_0(fh)
        if not dtype.hasobject:
            fh.seek(0)
            return np.lib.format.read_array(fh, allow_pickle=False)
        array = _ArrayUnpickler(fh).load()
    except (ValueError, EOFError, pickle.UnpicklingError, TypeError, AttributeError) as exc:
        raise DataError(f"{where}: cannot read it ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{where}: not an array")
    return array


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as zf:
            return {
                member[: -len(".npy")]: _read_npy(zf.read(member), f"{path}[{member[: -len('.npy')]}]")
                for member in zf.namelist()
                if member.endswith(".npy")
            }
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not an .npz archive") from None
