"""EMER and open-vocabulary benchmark folders: ``references.csv`` and, when present,
``subtitles.csv``.

EMER: ``references.csv`` with ``name`` and ``reason`` (or ``description``, ``caption``,
``smp_reason_caption``) columns; open vocabulary: ``name`` and ``openset`` (a list of emotion
words). No model and no prompts (see :mod:`emotion_llama.data.formats.lists`).
"""

from __future__ import annotations

from pathlib import Path

from emotion_llama.data.formats.lists import read_csv_table, read_subtitles, row_name
from emotion_llama.data.samples import Clip, DataError


def read_references(path: str | Path, column: str) -> dict[str, str]:
    """``name`` -> the reference text of ``column`` (falling back to common synonyms)."""
    path = Path(path)
    cols, at, rows = read_csv_table(path)
    aliases = {"reason": ("reason", "description", "caption", "smp_reason_caption"), "openset": ("openset",)}
    col = next((c for c in aliases.get(column, (column,)) if c in cols), None)
    if "name" not in cols or col is None:
        raise DataError(
            f"{path}:{at}: needs 'name' and '{column}' columns; has {', '.join(cols) or 'nothing'}"
        )
    return {row_name(r, "name", f"{path}:{i}"): r[col].strip() for i, r in rows}


def read_reference_folder(folder: str | Path, column: str) -> list[Clip]:
    """Every clip of ``folder/references.csv`` with its reference of ``column`` (``reason`` or
    ``openset``, as :func:`read_references`) and its subtitle from ``subtitles.csv``."""
    root = Path(folder)
    refs = read_references(root / "references.csv", column)
    subs = read_subtitles(root / "subtitles.csv") if (root / "subtitles.csv").is_file() else {}
    return [Clip(name=n, subtitle=subs.get(n, ""), reference=r) for n, r in refs.items()]
