"""Writing files atomically and reading JSON/YAML with errors that name the file: the one place.

Every result file of the project (features, records, exports, reports, plots, checkpoints,
downloads) is written under a temporary name in its target folder and renamed over the final name
(``os.replace``, atomic on POSIX and Windows): a crash or a full disk never leaves a half-written
file where a later run or another tool would take it for complete, and the temporary file is
removed when writing fails. Temporary names are ``.{name}.{random}.tmp`` (the name cut to 64
characters, so a name near the 255-byte limit still gets one); stores clean them up on start.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emotion_llama.errors import EmotionLlamaError

TMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The process's umask, read once at import (reading it means setting it, which is not thread-safe).
UMASK = _read_umask()


def _temp_name(path: Path) -> str:
    return f".{path.name[:64]}."


@contextmanager
def atomic_output(path: str | Path, *, folder: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to (by any writer that takes a path: ``savefig``,
    ``save_file``, ``save_pretrained``...); renamed over ``path`` when the block ends without an
    error, removed when it raises. ``folder=True`` for a folder: an existing one is replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_name(path), suffix=TMP_SUFFIX))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temp_name(path), suffix=TMP_SUFFIX)
        os.fchmod(fd, 0o666 & ~UMASK)  # temp files are 0600; the final file follows the umask
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if folder and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if folder and tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` into ``path``, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``text`` as UTF-8 into ``path``, atomically; line ends written as they are in ``text``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` then rename ``tmp`` over ``path``."""
    with atomic_output(path) as tmp:
        write(tmp)
    return Path(path)


def clean_partial(root: str | Path) -> int:
    """Remove the temporary files an interrupted run left under ``root``; returns how many."""
    n = 0
    root = Path(root)
    if root.is_dir():
        for p in root.rglob(f".*{TMP_SUFFIX}"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
    return n


def read_text(path: str | Path, *, what: str, error: type[Exception] = EmotionLlamaError) -> str:
    """A UTF-8 text file's text, or ``error`` naming the file: missing, unreadable, not UTF-8."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not valid {what} (not UTF-8 text: {exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc})") from None


def read_json(path: str | Path, *, error: type[Exception] = EmotionLlamaError) -> Any:
    """The parsed file, or ``error`` naming the file and what is wrong (missing, not UTF-8, not JSON
    with the line and column)."""
    text = read_text(path, what="JSON", error=error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


def jsonl_objects(
    path: str | Path, text: str, *, error: type[Exception] = EmotionLlamaError
) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of ``text`` (the content of ``path``, a
    JSONL file), or ``error`` naming ``path:line`` of the first line that is not a JSON object."""
    out: list[tuple[int, dict[str, Any]]] = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{i}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise error(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        out.append((i, obj))
    return out


def read_yaml(path: str | Path, *, error: type[Exception] = EmotionLlamaError) -> Any:
    """Like :func:`read_json` for YAML (``yaml.safe_load``: plain data only, no Python objects)."""
    import yaml

    text = read_text(path, what="YAML", error=error)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}: not valid YAML ({problem}{where})") from None
