"""Training data in every supported format, behind one entry point.

Recipes call::

    open_training_data(fmt, path, processor, *, split=None, tasks=None, fold=None, features=None,
                       subtitles=None, min_confidence=None, seed=0, layout="training") -> TrainDataset
    open_training_mix(specs, processor, *, seed=0, layout="training") -> TrainDataset

``processor`` is the model's :class:`~emotion_llama.model.processor.EmotionLlamaProcessor` (its
``config`` gives the feature dimensions). :func:`read_training_data` does the reading without a
processor and returns ``(samples, report)``. Every format yields the same
:class:`~emotion_llama.train.data.TrainSample` s; the dataset's :attr:`TrainDataset.summary`
says what was kept and dropped.

Formats (``fmt``), what ``path`` is, the tasks they give and their options:

- ``folder``: the project's dataset folder (:func:`~emotion_llama.train.data.read_training_folder`);
  emotion, reason, reason_v2; ``split`` (a key of ``split.json``).
- ``mer2023``, ``mer2024`` (the noise track reads the same): a label list or the folder holding
  it, NCEV (``labels.txt``, ``*_NCEV.txt``) or CSV (MER2024's ``label-disdim.csv``); emotion;
  ``split`` (``split.json`` beside the list), ``subtitles`` (:func:`read_mer_labels`).
- ``pseudo``: a pseudo-label list (:func:`read_pseudo_labels`); emotion; ``min_confidence``,
  ``subtitles``.
- ``dfew``: the DFEW folder with its ``EmoLabel_DataSplit`` split files, or the evaluation
  layout ``fold1/`` .. ``fold5/`` (:func:`read_dfew_fold`); emotion (7 labels); ``fold`` 1-5
  (required), ``split`` ``train`` (default) or ``test``.
- ``jsonl``: a JSONL file, one clip per line (:func:`read_jsonl`); the tasks its lines give.

``features`` is the feature store (the authors' layout or the project's); by default the
folder holding the labels (the authors' features sit beside their label lists, SPEC 5).
``subtitles`` is a ``name,sentence`` CSV; by default ``subtitles.csv`` or MER2024's
``label-transcription.csv`` beside the labels. DFEW has no subtitles. ``tasks`` keeps only those
tasks (default: the format's own; an emotion-only format refuses others).

Label words are normalised as every target (SPEC 2.3: lower case, ``. ! " ( ) * # : ; ~`` to
spaces); words outside the nine labels are kept (open vocabulary). A clip whose features or
frame are missing is reported once and skipped, never zero-filled (:class:`ClipResolver`).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.data.benchmarks import (
    DFEW_LABELS,
    DataError,
    find_dfew_split,
    find_label_list,
    find_subtitles,
    read_classification_folder,
    read_dfew_split,
    read_label_list,
    read_subtitles,
)
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.prompts import TASKS, normalize_target
from emotion_llama.train.data import (
    ClipResolver,
    ReadReport,
    TrainDataError,
    TrainDataset,
    TrainSample,
    finish_report,
    open_feature_store,
    read_training_folder,
    restrict_to_split,
)

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("folder", "jsonl", "mer2023", "mer2024", "pseudo", "dfew")
#: Formats whose only targets are label words.
EMOTION_ONLY: frozenset[str] = frozenset({"mer2023", "mer2024", "pseudo", "dfew"})
DEFAULT_TASKS: dict[str, tuple[str, ...] | None] = {
    "folder": ("emotion", "reason"),
    "jsonl": None,  # every task the lines have
    "mer2023": ("emotion",),
    "mer2024": ("emotion",),
    "pseudo": ("emotion",),
    "dfew": ("emotion",),
}
#: The DFEW instruction: the evaluation's wording (``evaluate.runner``), so that a model
#: fine-tuned on DFEW is asked the same question at test time. The nine-label instruction would
#: not offer "disgust".
DFEW_INSTRUCTION = f"Please determine which emotion label in the video represents: {', '.join(DFEW_LABELS)}."

#: Accepted columns of a pseudo-label CSV (first match wins).
PSEUDO_NAME_COLUMNS = ("name", "video_name", "video", "clip", "clip_name")
PSEUDO_LABEL_COLUMNS = ("pseudo_label", "pseu_emotion", "label", "emotion", "discrete", "pred", "prediction")
PSEUDO_CONFIDENCE_COLUMNS = ("confidence", "conf", "score", "prob", "probability")


@dataclass(frozen=True)
class DataSpec:
    """One training source: the arguments of :func:`open_training_data` without the processor.
    ``from_mapping`` reads a recipe's dict (``format`` or ``fmt``)."""

    format: str
    path: str | Path
    split: str | None = None
    tasks: tuple[str, ...] | None = None
    fold: int | None = None
    features: str | Path | None = None
    subtitles: str | Path | None = None
    min_confidence: float | None = None

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> DataSpec:
        d = dict(spec)
        if "fmt" in d:
            if "format" in d:
                raise TrainDataError("give the data format as 'format' or 'fmt', not both")
            d["format"] = d.pop("fmt")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainDataError(
                f"unknown data option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        for key in ("format", "path"):
            if d.get(key) is None:
                raise TrainDataError(f"a data source needs '{key}' (got {dict(spec)!r})")
        if d.get("tasks") is not None:
            tasks = d["tasks"]
            d["tasks"] = (tasks,) if isinstance(tasks, str) else tuple(tasks)
        return cls(**d)


# -- entry points ------------------------------------------------------------------------------------
def open_training_data(
    fmt: str,
    path: str | Path,
    processor: EmotionLlamaProcessor,
    *,
    split: str | None = None,
    tasks: Sequence[str] | None = None,
    fold: int | None = None,
    features: str | Path | None = None,
    subtitles: str | Path | None = None,
    min_confidence: float | None = None,
    seed: int = 0,
    layout: str = "training",
) -> TrainDataset:
    """A :class:`TrainDataset` from one source in format ``fmt`` (see the module docstring).

    Raises :class:`TrainDataError` for an unknown format (naming the valid ones), an option the
    format does not take, or a source that yields no sample; a malformed file raises an error
    naming the file and line.
    """
    spec = DataSpec(
        fmt,
        path,
        split=split,
        tasks=None if tasks is None else tuple(tasks),
        fold=fold,
        features=features,
        subtitles=subtitles,
        min_confidence=min_confidence,
    )
    return open_training_mix([spec], processor, seed=seed, layout=layout)


def open_training_mix(
    specs: Sequence[DataSpec | Mapping[str, Any]],
    processor: EmotionLlamaProcessor,
    *,
    seed: int = 0,
    layout: str = "training",
) -> TrainDataset:
    """Several sources concatenated into one :class:`TrainDataset` (stage 1 with pseudo-labels:
    MERR coarse plus a pseudo-label list). Samples of the same clip name from several sources
    become one clip whose item draws among all of them; one name with two different frames is
    an error (two different clips)."""
    if not specs:
        raise TrainDataError("no data sources given")
    samples: list[TrainSample] = []
    reports: list[ReadReport] = []
    frames: dict[str, tuple[str, str]] = {}
    for raw in specs:
        spec = raw if isinstance(raw, DataSpec) else DataSpec.from_mapping(raw)
        got, report = read_training_data(spec, processor.config)
        for s in got:
            where = str(s.frame) if isinstance(s.frame, Path) else f"<array of {s.name}>"
            seen = frames.setdefault(s.name, (where, report.source))
            if seen[0] != where:
                raise TrainDataError(
                    f"clip name {s.name!r} means two clips: frame {seen[0]} in {seen[1]} and "
                    f"{where} in {report.source}; rename one of them"
                )
        samples.extend(got)
        reports.append(report)
    if not samples:
        raise TrainDataError("no training samples: " + "; ".join(r.text() for r in reports))
    dataset = TrainDataset(samples, processor, seed=seed, layout=layout, reports=reports)
    log.info("training data: %s", dataset.summary)
    return dataset


def read_training_data(spec: DataSpec, config: EmotionLlamaConfig) -> tuple[list[TrainSample], ReadReport]:
    """The samples of one source and the report of what was kept and dropped."""
    fmt = spec.format
    if fmt not in FORMATS:
        raise TrainDataError(f"unknown data format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    tasks = _check_tasks(fmt, spec.tasks)
    _check_options(spec)
    path = Path(spec.path)
    report = ReadReport(f"{fmt} {path}")
    samples: list[TrainSample]
    if fmt == "folder":
        samples = read_training_folder(
            path,
            config,
            tasks=tasks or ("emotion", "reason"),
            split=spec.split,
            features=spec.features,
            report=report,
        )
    elif fmt in ("mer2023", "mer2024"):
        samples = read_mer_labels(
            path, config, features=spec.features, subtitles=spec.subtitles, split=spec.split, report=report
        )
    elif fmt == "pseudo":
        samples = read_pseudo_labels(
            path,
            config,
            features=spec.features,
            subtitles=spec.subtitles,
            min_confidence=spec.min_confidence,
            report=report,
        )
    elif fmt == "dfew":
        assert spec.fold is not None  # checked above
        samples = read_dfew_fold(
            path, config, fold=spec.fold, split=spec.split or "train", features=spec.features, report=report
        )
    else:
        samples = read_jsonl(path, config, features=spec.features, tasks=tasks, report=report)
    return samples, report


def _check_tasks(fmt: str, tasks: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if tasks is None:
        return DEFAULT_TASKS[fmt]
    if not tasks:
        raise TrainDataError("tasks is empty")
    for task in tasks:
        if task not in TASKS:
            raise TrainDataError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if fmt in EMOTION_ONLY and set(tasks) != {"emotion"}:
        raise TrainDataError(f"format {fmt!r} has only emotion targets (label words), not {', '.join(tasks)}")
    return tasks


def _check_options(spec: DataSpec) -> None:
    fmt = spec.format
    if spec.fold is not None and fmt != "dfew":
        raise TrainDataError(f"'fold' is for the dfew format, not {fmt!r}")
    if fmt == "dfew":
        if spec.fold is None:
            raise TrainDataError("the dfew format needs 'fold' (1-5)")
        if isinstance(spec.fold, bool) or not isinstance(spec.fold, int) or not 1 <= spec.fold <= 5:
            raise TrainDataError(f"DFEW fold must be 1..5, not {spec.fold!r}")
        if spec.split not in (None, "train", "test"):
            raise TrainDataError(f"DFEW split must be 'train' or 'test', not {spec.split!r}")
    if spec.min_confidence is not None and fmt != "pseudo":
        raise TrainDataError(f"'min_confidence' is for the pseudo format, not {fmt!r}")
    if spec.split is not None and fmt in ("pseudo", "jsonl"):
        raise TrainDataError(f"format {fmt!r} has no splits; give one file per split")
    if spec.subtitles is not None and fmt in ("folder", "dfew", "jsonl"):
        where = "the folder's subtitles.csv" if fmt == "folder" else "none" if fmt == "dfew" else "each line"
        raise TrainDataError(f"'subtitles' is not an option of format {fmt!r} (subtitles: {where})")


# -- shared pieces -------------------------------------------------------------------------------------
def _locate(path: Path) -> tuple[Path, Path | None]:
    """``(folder, file)``: a file and its folder, or a folder and ``None``."""
    if path.is_file():
        return path.parent, path
    if path.is_dir():
        return path, None
    raise TrainDataError(f"{path}: no such file or folder")


def _subtitles(explicit: str | Path | None, folder: Path) -> dict[str, str]:
    if explicit is not None:
        return read_subtitles(explicit)
    found = find_subtitles(folder)
    return read_subtitles(found) if found is not None else {}


def _label_target(label: str, where: str) -> str:
    target = normalize_target(label)
    if not target:
        raise TrainDataError(f"{where}: label {label!r} is empty once normalised")
    return target


def _emotion_samples(
    rows: Sequence[tuple[str, str]],
    resolver: ClipResolver,
    subtitles: Mapping[str, str],
    instruction: str | None = None,
) -> list[TrainSample]:
    """One emotion sample per ``(name, normalised label)`` row whose clip resolves."""
    samples: list[TrainSample] = []
    for name, target in rows:
        found = resolver.get(name)
        if found is None:
            continue
        feats, frame = found
        samples.append(
            TrainSample(name, subtitles.get(name, ""), "emotion", target, frame, feats, instruction)
        )
    return samples


# -- MER2023 / MER2024 ---------------------------------------------------------------------------------
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
    :mod:`emotion_llama.data.benchmarks`, the evaluation's readers. Clips without a label are
    counted as ``unlabelled``; a clip listed twice keeps its first line.
    """
    folder, file = _locate(Path(path))
    labels_path = file if file is not None else find_label_list(folder)
    report = report if report is not None else ReadReport(f"mer {labels_path}")
    clips = read_label_list(labels_path)
    subs = _subtitles(subtitles, folder)
    rows: dict[str, str] = {}
    for i, clip in enumerate(clips, start=1):
        if clip.name in rows:
            continue
        if not clip.label:
            report.unlabelled += 1
            continue
        rows[clip.name] = _label_target(clip.label, f"{labels_path} (clip {i}, {clip.name})")
    names = list(rows)
    if split is not None:
        names = restrict_to_split(names, folder / split_file, split)
    store = open_feature_store(features if features is not None else folder, config)
    resolver = ClipResolver(store, report, frame_roots=[folder])
    samples = _emotion_samples([(n, rows[n]) for n in names], resolver, subs)
    resolver.finish(samples)
    return samples


# -- pseudo-labels -------------------------------------------------------------------------------------
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
    subs = _subtitles(subtitles, path.parent)
    store = open_feature_store(features if features is not None else path.parent, config)
    resolver = ClipResolver(store, report, frame_roots=[path.parent])
    samples = _emotion_samples(rows, resolver, subs)
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
    target = _label_target(label, where)
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


# -- DFEW ----------------------------------------------------------------------------------------------
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
            samples.extend(_emotion_samples(rows, resolver, {}, DFEW_INSTRUCTION))
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
    samples = _emotion_samples(rows, resolver, {}, DFEW_INSTRUCTION)
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
        rows.append((clip.name, _label_target(clip.label, f"{where} (clip {clip.name})")))
    return rows


# -- JSONL ---------------------------------------------------------------------------------------------
#: Keys a JSONL line may have; other keys are ignored.
JSONL_KEYS: tuple[str, ...] = ("name", "video", "label", "subtitle", "reasoning", "task", "frame")


@dataclass(frozen=True)
class _JsonlEntry:
    line: int
    name: str
    subtitle: str
    frame: Path | None
    video: Path | None
    targets: tuple[tuple[str, str], ...]  # (task, target)


def read_jsonl(
    path: str | Path,
    config: EmotionLlamaConfig,
    *,
    features: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    report: ReadReport | None = None,
) -> list[TrainSample]:
    """Samples from a JSONL file, one object per line (docs/dataset.md, "Training on your own
    data")::

        {"name": "clip_001", "label": "happy", "subtitle": "...", "reasoning": "...", "task": "reason"}
        {"video": "videos/clip_002.mp4", "label": "pleasantly surprised", "frame": "frames/clip_002.jpg"}

    - ``name``, or ``video`` (its file stem is the name); the clip's features are ``name`` in the
      feature store (``features``, default the file's folder);
    - ``label`` -> an ``emotion`` sample (any words: open vocabulary; normalised as targets are);
    - ``reasoning`` -> a ``reason`` sample, or of the task ``task`` names (``reason_v2``);
      ``task: "emotion"`` means the label only;
    - ``subtitle``: what the person says (default empty);
    - ``frame``: the image (or video) for the global encoder; by default the store's frame, then
      ``video``. Relative paths are relative to the JSONL file's folder.

    ``tasks`` keeps only those tasks (default: all). Every line is checked before any feature
    is read; a bad line raises :class:`TrainDataError` naming the file and the line number.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainDataError(f"{path}: no such JSONL file")
    report = report if report is not None else ReadReport(f"jsonl {path}")
    entries = _read_jsonl_entries(path)
    store = open_feature_store(features if features is not None else path.parent, config)
    resolver = ClipResolver(store, report, frame_roots=[path.parent])
    samples: list[TrainSample] = []
    for e in entries:
        targets = [(t, x) for t, x in e.targets if tasks is None or t in tasks]
        if not targets:
            continue
        frame = e.frame
        if (
            frame is None
            and e.video is not None
            and e.video.is_file()
            and not store.frame_path(e.name).is_file()
        ):
            frame = e.video
        found = resolver.get(e.name, frame)
        if found is None:
            continue
        feats, frame_path = found
        for task, target in targets:
            samples.append(TrainSample(e.name, e.subtitle, task, target, frame_path, feats))
    resolver.finish(samples)
    return samples


def _read_jsonl_entries(path: Path) -> list[_JsonlEntry]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise TrainDataError(f"{path}: not UTF-8 text ({exc})") from None
    entries: list[_JsonlEntry] = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainDataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise TrainDataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        entries.append(_jsonl_entry(obj, path.parent, where, i))
    if not entries:
        raise TrainDataError(f"{path}: no lines")
    return entries


def _jsonl_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TrainDataError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _jsonl_entry(obj: dict[str, Any], base: Path, where: str, line: int) -> _JsonlEntry:
    name = _jsonl_str(obj, "name", where)
    video_text = _jsonl_str(obj, "video", where)
    video = _resolve_path(base, video_text) if video_text else None
    if not name:
        if not video_text:
            raise TrainDataError(f"{where}: needs 'name' or 'video'")
        name = Path(video_text).stem
    name = name.strip()
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise TrainDataError(
            f"{where}: {name!r} cannot be a clip name (it names a file in the feature store)"
        )
    label = _jsonl_str(obj, "label", where)
    reasoning = _jsonl_str(obj, "reasoning", where)
    task = _jsonl_str(obj, "task", where)
    subtitle = (_jsonl_str(obj, "subtitle", where) or "").strip()
    frame_text = _jsonl_str(obj, "frame", where)
    if task is not None and task not in TASKS:
        raise TrainDataError(f"{where}: unknown task {task!r}; choose from {', '.join(TASKS)}")
    if label is not None and not label.strip():
        raise TrainDataError(f"{where}: 'label' is empty")
    if reasoning is not None and not reasoning.strip():
        raise TrainDataError(f"{where}: 'reasoning' is empty")
    targets: list[tuple[str, str]] = []
    if task == "emotion":
        if label is None:
            raise TrainDataError(f"{where}: task 'emotion' needs a 'label'")
        if reasoning is not None:
            raise TrainDataError(
                f"{where}: task 'emotion' takes the label only; "
                "give 'reasoning' with task reason or reason_v2"
            )
    elif task is not None and reasoning is None:
        raise TrainDataError(f"{where}: task {task!r} needs a 'reasoning'")
    if label is not None:
        targets.append(("emotion", _label_target(label, where)))
    if reasoning is not None:
        targets.append((task or "reason", reasoning))
    if not targets:
        raise TrainDataError(f"{where}: no target; give 'label' and/or 'reasoning'")
    frame = _resolve_path(base, frame_text) if frame_text else None
    return _JsonlEntry(line, name, subtitle, frame, video, tuple(targets))


def _resolve_path(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p
