"""The server's temp folder: ``work/`` (request inputs, downloads, rendered images, batch files)
and ``uploads/`` (the upload store), removed with the app."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def make_workspace(parent: Path | None) -> tuple[Path, Path, Path]:
    """A new temp folder under ``parent`` (the system's when ``None``) with its ``work`` and
    ``uploads`` folders: the three paths."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="emotion-llama-serve-", dir=parent))
    (tmp / "work").mkdir()
    (tmp / "uploads").mkdir()
    return tmp, tmp / "work", tmp / "uploads"


def dir_size(path: Path) -> int:
    """Bytes of the files under ``path`` (the tests watch the temp folder with it)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
