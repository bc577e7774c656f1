"""Timing helpers shared by the benchmark scripts (imported as ``timing`` when a script runs from
this folder): a device sync and the median of repeated calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_json(path: str | None, payload: Any) -> None:
    """``payload`` as JSON at ``path`` (nothing when ``None``), through a temporary file and a
    rename, so that a reader never sees half a file. The scripts call it after every row with what
    they have so far: a run stopped by ``gpu_all.py`` at its share of the budget keeps its rows."""
    if path is None:
        return
    import json
    import os

    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)
