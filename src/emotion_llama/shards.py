"""Plain sharding for schedulers without Ray (SLURM job arrays, torchrun, a loop over hosts).

``--shard i/N`` gives a command the clips of shard ``i`` of ``N`` (``0 <= i < N``). A clip's shard
is a pure function of its name: the first 8 bytes of ``sha256(name)`` modulo ``N``. Not its place
in the list, so adding or removing clips never moves the others to another shard, every process
agrees without talking to the others, and a rerun of a shard finds its own finished clips again.

A sharded command writes a complete output of its own into ``OUT/shards/i-of-N/`` (a feature
store, a dataset, or a predictions file, resumable as the unsharded one), and ``shard.json`` there
once it has finished. ``emotion-llama merge OUT`` then makes one output in ``OUT`` from the
shards, equal to the one an unsharded run writes (:mod:`emotion_llama.cli.merge_commands`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.files import atomic_write_bytes
from emotion_llama.names import json_bytes, printable, raw_bytes

#: The folder of OUT that holds the shards' outputs.
SHARDS_DIR = "shards"
#: Written into a shard's folder when its run has finished: what it did and with which options.
DONE_FILE = "shard.json"
FORMAT = "emotion-llama-shard/1"

T = TypeVar("T")


def shard_index(name: str, count: int) -> int:
    """The shard (``0 .. count-1``) of the clip called ``name``: stable across runs, processes and
    machines (sha256 of the name's bytes, not Python's salted ``hash``)."""
    if count < 1:
        raise EmotionLlamaError(f"a shard count must be at least 1, not {count}")
    digest = hashlib.sha256(raw_bytes(name)).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise EmotionLlamaError(
                f"--shard {self.index}/{self.count}: give i/N with N at least 1 and 0 <= i < N"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def folder_name(self) -> str:
        return f"{self.index}-of-{self.count}"

    def has(self, name: str) -> bool:
        """Whether the clip called ``name`` belongs to this shard."""
        return shard_index(name, self.count) == self.index

    def select(self, items: Iterable[T], name: Callable[[T], str]) -> list[T]:
        """The items whose clip name (``name(item)``) belongs to this shard, in their order."""
        return [it for it in items if self.has(name(it))]

    def folder(self, out: str | Path) -> Path:
        """Where this shard's output goes under the command's ``OUT``."""
        return Path(out) / SHARDS_DIR / self.folder_name


_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_FOLDER = re.compile(r"^(\d+)-of-(\d+)$")


def parse_shard(text: str | None) -> Shard | None:
    """``"i/N"`` as a :class:`Shard` (``None`` stays ``None``: no sharding). SLURM's
    ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`` and torchrun's ``$RANK/$WORLD_SIZE`` are
    of this form."""
    if text is None:
        return None
    m = _SHARD.match(text)
    if m is None:
        raise EmotionLlamaError(f"--shard {text!r}: give i/N, e.g. 0/4 (shard 0 of 4)")
    return Shard(int(m.group(1)), int(m.group(2)))


def select(items: Iterable[T], shard: Shard | None, name: Callable[[T], str]) -> list[T]:
    """All of ``items`` without a shard, else the shard's (see :meth:`Shard.select`)."""
    return list(items) if shard is None else shard.select(items, name)


def mark_done(folder: str | Path, shard: Shard, kind: str, **info: Any) -> Path:
    """Write ``shard.json``: this shard's run over ``kind`` (features, dataset, predictions) has
    finished; ``info`` holds what the merge needs (options, the clips that failed, counts)."""
    body = {"format": FORMAT, "kind": kind, "index": shard.index, "count": shard.count, **info}
    return atomic_write_bytes(Path(folder) / DONE_FILE, json_bytes(body, indent=1, sort_keys=True))


@dataclass(frozen=True)
class ShardFolder:
    """A shard's output folder found under ``OUT/shards`` and its ``shard.json`` (``None``: the
    shard has not finished, or never ran)."""

    shard: Shard
    path: Path
    done: dict[str, Any] | None


def find_shards(out: str | Path) -> list[ShardFolder]:
    """The shard folders of ``out`` (``OUT/shards/i-of-N``), sorted by index. Every one must have
    the same ``N``, and all ``N`` must be there and finished: otherwise the error says which are
    missing or still running (a merge of part of the clips would pass for the whole dataset)."""
    root = Path(out) / SHARDS_DIR
    if not root.is_dir():
        raise EmotionLlamaError(f"{printable(root)}: no such folder (run the command with --shard i/N first)")
    found: list[ShardFolder] = []
    for p in sorted(root.iterdir()):
        m = _FOLDER.match(p.name)
        if m is None or not p.is_dir():
            continue
        shard = Shard(int(m.group(1)), int(m.group(2)))
        done = None
        if (p / DONE_FILE).is_file():
            try:
                done = json.loads((p / DONE_FILE).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise EmotionLlamaError(f"{printable(p / DONE_FILE)}: not readable ({exc})") from None
        found.append(ShardFolder(shard, p, done))
    if not found:
        raise EmotionLlamaError(f"{printable(root)}: holds no shard folder (i-of-N)")
    counts = sorted({f.shard.count for f in found})
    if len(counts) > 1:
        raise EmotionLlamaError(
            f"{printable(root)}: shards of different counts ({', '.join(map(str, counts))}); "
            "keep one --shard i/N split per output folder"
        )
    n = counts[0]
    have = {f.shard.index for f in found}
    missing = [str(i) for i in range(n) if i not in have]
    unfinished = [str(f.shard.index) for f in found if f.done is None]
    if missing or unfinished:
        parts = []
        if missing:
            parts.append(f"shard(s) {', '.join(missing)} of {n} never ran")
        if unfinished:
            parts.append(f"shard(s) {', '.join(unfinished)} of {n} have not finished (no {DONE_FILE})")
        raise EmotionLlamaError(f"{printable(root)}: " + "; ".join(parts))
    return sorted(found, key=lambda f: f.shard.index)
