"""The one progress bar every long job uses (rich, imported only when a bar is made)."""

from __future__ import annotations

from typing import Any


def progress_bar(show: bool = True) -> Any:
    """A rich ``Progress``: description, bar, done/total, elapsed and remaining time; silent when
    ``show`` is false (tests, library use)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show,
    )
