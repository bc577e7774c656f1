"""Open-vocabulary emotion metric (MER2024-OV, OV-MERD, MER-UniBench).

A prediction and a gold annotation are each a list of free emotion words. Every word is
normalised in three steps and then compared at the level of emotion-wheel sectors:

1. word form (``format.csv``): an inflected form maps to its lemma(s) ("delights" -> "delight");
2. synonyms (``synonym.csv``, eight independent runs merged): a synonym maps to a wheel word;
3. each of five emotion wheels (``wheel1.csv`` .. ``wheel5.csv``) maps a word at any of its three
   levels to its level-1 (inner) sector.

A word missing from the word-form table, or whose synonyms never reach the wheel, is dropped.
Per sample and wheel, ``precision = |G∩P| / |P|`` and ``recall = |G∩P| / |G|`` on the mapped sets
(a sample whose gold set is empty is skipped; an empty prediction set scores 0); both are averaged
over the samples, ``Fs = 2PR / (P + R)``, and Fs, precision and recall are averaged over the
wheels. Basic-emotion datasets with a single gold label use :func:`hit_rate` instead.

The tables come from the AffectGPT / OV-MER evaluation toolkit (Apache-2.0); the project does not
ship them, :meth:`EmotionWheels.load` takes their folder.

Scoring is fast: :meth:`EmotionWheels.load` maps the whole vocabulary once, so a sample costs a
few dictionary look-ups. Each word's sectors on all wheels are packed into one integer bit mask
(one bit per level-1 sector), a sample's mapped set is the OR of its words' masks, and the set
sizes are population counts computed with numpy over all samples at once.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT_FILE",
    "SYNONYM_FILE",
    "TABLE_SOURCE",
    "WHEEL_NAMES",
    "EmotionWheels",
    "Labels",
    "hit_rate",
    "ov_scores",
    "split_labels",
]

FORMAT_FILE = "format.csv"
SYNONYM_FILE = "synonym.csv"
WHEEL_NAMES: tuple[str, ...] = ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5")
TABLE_SOURCE = (
    "the AffectGPT / OV-MER evaluation toolkit (Apache-2.0): format.csv, synonym.csv and "
    "wheel1.csv .. wheel5.csv (an .xlsx table there can be saved as .csv)"
)

#: One sample's emotion words: a list of words or one string such as "happy, relieved" or "['a', 'b']".
Labels = str | Iterable[str] | None

_SEPARATORS = re.compile(r"[,'\"]")
_SYNONYM_COLUMN = re.compile(r"word_run(\d+)")
_RAW_CACHE_LIMIT = 1 << 20


def split_labels(value: Labels) -> list[str]:
    """One sample's emotion words as a list of stripped, non-empty strings.

    A string loses surrounding whitespace, then one leading ``[`` and one trailing ``]``, and is split
    on ``,``, ``'`` and ``"``. A list (or other iterable) is taken item by item, without splitting.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            text = text[1:]
        if text.endswith("]"):
            text = text[:-1]
        items: Iterable[str] = _SEPARATORS.split(text)
    else:
        items = (str(item) for item in value)
    return [item for item in (raw.strip() for raw in items) if item]


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{path.name} not found in {path.parent}: the open-vocabulary emotion metric needs the "
        f"emotion-wheel tables from {TABLE_SOURCE}. Put them in one folder and pass that folder."
    )


def _read_table(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV table as dicts with stripped column names; empty cells are ''."""
    if not path.is_file():
        raise _missing(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path.name} in {path.parent} is empty; expected columns {list(required)}")
        columns = [name.strip() for name in header]
        absent = [name for name in required if name not in columns]
        if absent:
            raise ValueError(
                f"{path.name} in {path.parent} lacks column(s) {absent} (has {columns}); "
                f"expected the table from {TABLE_SOURCE}"
            )
        return [
            {name: (row[i] if i < len(row) else "") for i, name in enumerate(columns)}
            for row in reader
            if any(cell.strip() for cell in row)
        ]


def _read_word_forms(path: Path) -> dict[str, frozenset[str]]:
    """Word form -> lemma(s): every item of ``format`` maps to ``name``; ``name`` maps to itself."""
    forms: dict[str, set[str]] = {}
    for row in _read_table(path, ("name", "format")):
        name = row["name"].strip().lower()
        if not name:
            continue
        forms.setdefault(name, set()).add(name)
        for item in split_labels(row["format"]):
            forms.setdefault(item.lower(), set()).add(name)
    return {word: frozenset(names) for word, names in forms.items()}


def _read_synonyms(path: Path) -> dict[str, frozenset[str]]:
    """Word or synonym -> wheel word(s), merged over all ``word_runK``/``synonym_runK`` runs."""
    if not path.is_file():
        raise _missing(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None) or []
    runs = sorted(int(m.group(1)) for m in map(_SYNONYM_COLUMN.fullmatch, (c.strip() for c in header)) if m)
    if not runs:
        raise ValueError(
            f"{path.name} in {path.parent} has no word_runK/synonym_runK columns (has {header}); "
            f"expected the table from {TABLE_SOURCE}"
        )
    columns = [name for k in runs for name in (f"word_run{k}", f"synonym_run{k}")]
    rows = _read_table(path, columns)
    synonyms: dict[str, set[str]] = {}
    for k in runs:
        for row in rows:
            word = row[f"word_run{k}"].strip().lower()
            if not word:
                continue
            synonyms.setdefault(word, set()).add(word)
            for synonym in split_labels(row[f"synonym_run{k}"]):
                synonyms.setdefault(synonym.lower(), set()).add(word)
    return {word: frozenset(targets) for word, targets in synonyms.items()}


def _read_wheel(path: Path) -> dict[str, str]:
    """Word at any level -> its level-1 sector. A blank cell repeats the value above it.

    Values are stripped and lower-cased. A word listed twice keeps the sector of its last row.
    """
    levels = ("level1", "level2", "level3")
    mapping: dict[str, str] = {}
    above = dict.fromkeys(levels, "")
    for number, row in enumerate(_read_table(path, levels), start=2):
        for level in levels:
            above[level] = row[level].strip().lower() or above[level]
        sector = above["level1"]
        if not sector:
            raise ValueError(f"{path.name} in {path.parent}, line {number}: no level1 value above this row")
        for level in levels:
            if above[level]:
                mapping[above[level]] = sector
    if not mapping:
        raise ValueError(f"{path.name} in {path.parent} has no rows")
    return mapping


def _popcount(values: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(values).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)  # pragma: no cover
    return table[values.view(np.uint8).reshape(-1, 8)].sum(axis=1)  # pragma: no cover


def _mean(values: np.ndarray) -> float:
    """Correctly rounded mean (math.fsum), so that any summation order gives the same number."""
    return math.fsum(values.tolist()) / len(values) if len(values) else math.nan


@dataclass(eq=False)
class EmotionWheels:
    """The word-form, synonym and wheel tables, with every vocabulary word mapped once.

    Build it with :meth:`load`. ``word_forms`` maps a word form to its lemmas, ``synonyms`` a word
    to the wheel words it stands for, ``wheels`` each wheel name to its word -> level-1 sector map.
    """

    word_forms: dict[str, frozenset[str]]
    synonyms: dict[str, frozenset[str]]
    wheels: dict[str, dict[str, str]]
    source: Path | None = None
    _sectors: dict[str, tuple[str, ...]] = field(init=False, repr=False)
    _offsets: dict[str, int] = field(init=False, repr=False)
    _word_sector: dict[str, dict[str, str | None]] = field(init=False, repr=False)
    _word_mask: dict[str, int] = field(init=False, repr=False)
    _raw_mask: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.wheels:
            raise ValueError("EmotionWheels needs at least one wheel")
        self._sectors = {}
        self._offsets = {}
        offset = 0
        for name, mapping in self.wheels.items():
            sectors = tuple(dict.fromkeys(mapping.values()))
            if len(sectors) > 64:
                raise ValueError(f"{name} has {len(sectors)} level-1 sectors; at most 64 are supported")
            self._sectors[name] = sectors
            self._offsets[name] = offset
            offset += len(sectors)
        # Every word the metric can keep is a key of the word-form table: map them all now.
        self._word_sector = {name: {} for name in self.wheels}
        self._word_mask = {}
        for word in self.word_forms:
            candidates = sorted(
                set().union(*(self.synonyms.get(lemma, frozenset()) for lemma in self.word_forms[word]))
            )
            mask = 0
            for name, mapping in self.wheels.items():
                sector = next((mapping[c] for c in candidates if c in mapping), None)
                self._word_sector[name][word] = sector
                if sector is not None:
                    mask |= 1 << (self._offsets[name] + self._sectors[name].index(sector))
            self._word_mask[word] = mask
        self._raw_mask = {}

    @classmethod
    def load(cls, directory: str | Path) -> EmotionWheels:
        """Read ``format.csv``, ``synonym.csv`` and ``wheel1.csv`` .. ``wheel5.csv`` from ``directory``."""
        folder = Path(directory).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"emotion-wheel folder {folder} does not exist: the open-vocabulary emotion metric needs "
                f"the tables from {TABLE_SOURCE}. Put them in one folder and pass that folder."
            )
        names = [FORMAT_FILE, SYNONYM_FILE, *(f"{wheel}.csv" for wheel in WHEEL_NAMES)]
        for name in names:  # report a missing table before parsing anything
            if not (folder / name).is_file():
                raise _missing(folder / name)
        return cls(
            word_forms=_read_word_forms(folder / FORMAT_FILE),
            synonyms=_read_synonyms(folder / SYNONYM_FILE),
            wheels={wheel: _read_wheel(folder / f"{wheel}.csv") for wheel in WHEEL_NAMES},
            source=folder,
        )

    # ------------------------------------------------------------------ look-ups

    @property
    def wheel_names(self) -> tuple[str, ...]:
        return tuple(self.wheels)

    def _wheel(self, wheel: str | int) -> str:
        name = f"wheel{wheel}" if isinstance(wheel, int) else wheel
        if name not in self.wheels:
            raise KeyError(f"unknown wheel {wheel!r}; the wheels are {list(self.wheels)}")
        return name

    def sectors(self, wheel: str | int) -> tuple[str, ...]:
        """The level-1 sectors of ``wheel`` (``"wheel1"`` or ``1``), in table order."""
        return self._sectors[self._wheel(wheel)]

    def map_word(self, word: str, wheel: str | int) -> str | None:
        """The level-1 sector of one word on ``wheel``, or None when the word is dropped."""
        return self._word_sector[self._wheel(wheel)].get(word.strip().lower())

    def map_words(self, words: Labels, wheel: str | int) -> set[str]:
        """The set of level-1 sectors that ``words`` (a list or a list-like string) reach on ``wheel``."""
        table = self._word_sector[self._wheel(wheel)]
        mapped = (table.get(word.lower()) for word in split_labels(words))
        return {sector for sector in mapped if sector is not None}

    def mask(self, words: Labels) -> int:
        """Bit mask of the sectors ``words`` reach on all wheels (see :meth:`wheel_bits`)."""
        if words is None:
            return 0
        items: Iterable[Any] = split_labels(words) if isinstance(words, str) else words
        cache = self._raw_mask
        mask = 0
        for item in items:
            word = item if isinstance(item, str) else str(item)
            bits = cache.get(word)
            if bits is None:
                bits = self._word_mask.get(word.strip().lower(), 0)
                if len(cache) >= _RAW_CACHE_LIMIT:
                    cache.clear()
                cache[word] = bits
            mask |= bits
        return mask

    def wheel_bits(self, wheel: str | int) -> tuple[int, int]:
        """(offset, width): the bits of :meth:`mask` that belong to ``wheel``."""
        name = self._wheel(wheel)
        return self._offsets[name], len(self._sectors[name])

    def _split_masks(self, masks: list[int]) -> dict[str, np.ndarray]:
        """Per wheel, the samples' sector masks as uint64 (bit i = sector i of that wheel)."""
        bits = {name: self.wheel_bits(name) for name in self.wheels}
        if sum(width for _, width in bits.values()) <= 64:
            packed = np.fromiter(masks, dtype=np.uint64, count=len(masks))
            return {
                name: (packed >> np.uint64(offset)) & np.uint64((1 << width) - 1)
                for name, (offset, width) in bits.items()
            }
        return {
            name: np.fromiter(
                ((m >> offset) & ((1 << width) - 1) for m in masks), dtype=np.uint64, count=len(masks)
            )
            for name, (offset, width) in bits.items()
        }


def _as_wheels(wheels: EmotionWheels | str | Path) -> EmotionWheels:
    return wheels if isinstance(wheels, EmotionWheels) else EmotionWheels.load(wheels)


def _check_pair(first: Sequence[Any], second: Sequence[Any], names: tuple[str, str]) -> None:
    for value, name in zip((first, second), names, strict=True):
        if isinstance(value, str):
            raise TypeError(f"{name} must be a sequence with one entry per sample, not a string")
    if len(first) != len(second):
        raise ValueError(f"{names[0]} has {len(first)} samples but {names[1]} has {len(second)}")


def ov_scores(
    golds: Sequence[Labels], preds: Sequence[Labels], wheels: EmotionWheels | str | Path
) -> dict[str, Any]:
    """Open-vocabulary precision, recall and Fs, averaged over the wheels.

    ``golds[i]`` and ``preds[i]`` are sample i's emotion words (lists or list-like strings);
    ``wheels`` is an :class:`EmotionWheels` or the folder of its tables. Returns ``fs``,
    ``precision`` and ``recall`` (means over the wheels), ``per_wheel`` (wheel name -> ``fs``,
    ``precision``, ``recall``, ``n_scored``), ``n_scored`` (samples scored on at least one wheel)
    and ``n_samples``. A wheel on which no sample has a non-empty gold set scores NaN.
    """
    _check_pair(golds, preds, ("golds", "preds"))
    table = _as_wheels(wheels)
    gold_masks = [table.mask(labels) for labels in golds]
    pred_masks = [table.mask(labels) for labels in preds]
    per_gold, per_pred = table._split_masks(gold_masks), table._split_masks(pred_masks)
    per_wheel: dict[str, dict[str, float | int]] = {}
    for name in table.wheels:
        g, p = per_gold[name], per_pred[name]
        n_gold, n_pred, n_both = _popcount(g), _popcount(p), _popcount(g & p)
        keep = n_gold > 0
        n_gold, n_pred, n_both = n_gold[keep], n_pred[keep], n_both[keep]
        precision = _mean(np.where(n_pred > 0, n_both / np.maximum(n_pred, 1), 0.0))
        recall = _mean(np.where(n_pred > 0, n_both / np.maximum(n_gold, 1), 0.0))
        per_wheel[name] = {
            "fs": _f_score(precision, recall),
            "precision": precision,
            "recall": recall,
            "n_scored": int(keep.sum()),
        }
    scored = sum(1 for mask in gold_masks if mask)
    return {
        **{
            key: _mean(np.array([row[key] for row in per_wheel.values()]))
            for key in ("fs", "precision", "recall")
        },
        "per_wheel": per_wheel,
        "n_scored": scored,
        "n_samples": len(golds),
    }


def _f_score(precision: float, recall: float) -> float:
    if math.isnan(precision) or math.isnan(recall):
        return math.nan
    total = precision + recall
    return 2 * precision * recall / total if total > 0 else 0.0


def hit_rate(
    gold_labels: Sequence[str | None], preds: Sequence[Labels], wheels: EmotionWheels | str | Path
) -> dict[str, Any]:
    """Hit rate for datasets with one basic-emotion gold label per sample.

    Per wheel, a sample is a hit when the sector of its gold label is among the sectors of its
    predicted words; samples whose gold label maps to nothing on that wheel are skipped. Returns
    ``hit_rate`` (mean over the wheels), ``per_wheel`` (``hit_rate``, ``n_scored``), ``n_scored``
    (samples scored on at least one wheel) and ``n_samples``.
    """
    _check_pair(gold_labels, preds, ("gold_labels", "preds"))
    table = _as_wheels(wheels)
    gold_masks = [table.mask([] if label is None else [label]) for label in gold_labels]
    pred_masks = [table.mask(labels) for labels in preds]
    per_gold, per_pred = table._split_masks(gold_masks), table._split_masks(pred_masks)
    per_wheel: dict[str, dict[str, float | int]] = {}
    for name in table.wheels:
        g, p = per_gold[name], per_pred[name]
        keep = g != 0
        hits = ((g & p) != 0)[keep].astype(np.float64)
        per_wheel[name] = {"hit_rate": _mean(hits), "n_scored": int(keep.sum())}
    return {
        "hit_rate": _mean(np.array([row["hit_rate"] for row in per_wheel.values()])),
        "per_wheel": per_wheel,
        "n_scored": sum(1 for mask in gold_masks if mask),
        "n_samples": len(gold_labels),
    }
