"""Evaluated clips that the model trained on: found by name, reported as a warning.

A score on training clips says little about unseen ones. ``train`` records the names of the clips
a run trained on in ``RUN/train_clips.txt`` (:data:`~emotion_llama.model.checkpoint.TRAIN_CLIPS_FILE`);
``evaluate`` compares the benchmark's clip names with that record, or with a list given with
``--train-clips`` (a released checkpoint records nothing: MERR's JSON names its training clips).
The MERR clips come from the same pool as the MER2023 test set (SPEC 6), so the check matters
most there.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path

from emotion_llama.data.samples import DataError
from emotion_llama.model.checkpoint import TRAIN_CLIPS_FILE

#: Benchmarks whose clips come from the pool MERR was built from (SPEC 6).
MER_POOL = ("mer2023", "mer2024-noise")


def recorded_train_clips(checkpoint: str | Path) -> tuple[set[str], Path] | None:
    """The training clip names a checkpoint folder's run recorded (``train_clips.txt`` in the
    folder, else in its run folder) and that file; ``None`` when neither has one."""
    folder = Path(checkpoint)
    for place in (folder, folder.parent):
        path = place / TRAIN_CLIPS_FILE
        if path.is_file():
            return read_clip_names(path), path
    return None


def read_clip_names(path: str | Path) -> set[str]:
    """Clip names from a file: a text file (one a line), a JSON list of names, a JSON object
    keyed by clip name (MERR's ``merr_coarse.json`` / ``merr_fine.json``), or a ``split.json``
    (its ``train`` list)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected clip names: text, one a line, or JSON)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    if path.suffix.lower() != ".json":
        return {line.strip() for line in text.splitlines() if line.strip()}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("train"), list):
        data = data["train"]  # a split.json: its training names
    if isinstance(data, dict):
        return {str(k) for k in data}
    if isinstance(data, list) and all(isinstance(n, str) for n in data):
        return set(data)
    raise DataError(f"{path}: expected a JSON list of clip names or an object keyed by clip name")


def overlap_warning(
    evaluated: Sequence[str], trained: Collection[str], source: str | Path, benchmark: str
) -> str | None:
    """A warning naming how many (and a few) of the ``evaluated`` clip names are in ``trained``
    (read from ``source``); ``None`` when none is."""
    shared = sorted(set(evaluated) & set(trained))
    if not shared:
        return None
    few = ", ".join(shared[:5]) + (", ..." if len(shared) > 5 else "")
    text = (
        f"{len(shared)} of the {len(set(evaluated))} evaluated clips are training clips of this model "
        f"(by name, from {source}): {few}. Their scores overstate how it does on unseen clips; "
        "evaluate a held-out split (--split) or other data"
    )
    if benchmark in MER_POOL:
        text += " (MERR's clips come from the MER2023 pool, so a MERR-trained model meets them: SPEC 6)"
    return text


def unchecked_note(benchmark: str) -> str | None:
    """What to say when the model records no training clips: only for the MER2023 pool, where
    MERR-trained models often overlap the test set."""
    if benchmark not in MER_POOL:
        return None
    return (
        "the checkpoint records no training clips, so overlap with the benchmark is unchecked; MERR "
        "shares clips with MER2023 (SPEC 6): pass --train-clips with its merr_coarse.json / "
        "merr_fine.json (or a list of names) to check"
    )


def check_overlap(
    checkpoint: str | Path,
    evaluated: Sequence[str],
    benchmark: str,
    train_clips: str | Path | None = None,
) -> tuple[list[str], list[str]]:
    """``(warnings, notes)`` on the evaluated clip names against the checkpoint's recorded
    training clips and the names in ``train_clips`` (a file, see :func:`read_clip_names`). A
    note says when nothing could be compared on the MER2023 pool."""
    sources: list[tuple[set[str], Path]] = []
    if train_clips is not None:
        sources.append((read_clip_names(train_clips), Path(train_clips)))
    recorded = recorded_train_clips(checkpoint)
    if recorded is not None:
        sources.append(recorded)
    if not sources:
        note = unchecked_note(benchmark)
        return [], [note] if note else []
    found = (overlap_warning(evaluated, names, source, benchmark) for names, source in sources)
    return [w for w in found if w is not None], []
