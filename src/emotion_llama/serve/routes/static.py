"""``GET /``: the web page (plain files), when its folder exists."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI


def mount_static(app: FastAPI, folder: Path | None) -> None:
    """Serve ``folder`` at ``/`` (``index.html`` for folders); nothing when it is not a folder."""
    if folder is not None and folder.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=folder, html=True), name="static")
