"""Where the clips of ``extract``, ``annotate`` and ``analyze`` are perceived: the engines.

One interface, :func:`perceive_clips`, over two engines that run the same per-clip code
(:mod:`emotion_llama.perception.workers`: one Perceiver per worker process):

- ``local`` (the default): a process pool on this machine, at most two clips per worker in flight;
- ``ray``: a Ray cluster through Ray Data's streaming execution (:mod:`.ray_engine`), each clip a
  CPU task, the encoders an actor pool when the encoders' device is a GPU (or with
  ``--encoder-actors`` on the CPU).

The driver (the command's own process) keeps every write: it encodes the clips the engine did
not, and writes each finished clip atomically, so the outputs, the resume and the failure table are
the same whichever engine ran, and either can finish a folder the other started.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from emotion_llama.config import PerceptionConfig
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.perception.workers import (
    ENGINES,
    ClipResult,
    EncodeSpec,
    Engine,
    init_worker,
    perceive_one,
)

__all__ = ["ENGINES", "ClipResult", "EncodeSpec", "Engine", "perceive_clips"]


def perceive_clips(
    todo: list[Path],
    config: PerceptionConfig,
    frame: str,
    subtitles: dict[str, str],
    engine: Engine | None = None,
    *,
    encode: EncodeSpec | None = None,
    ordered: bool = False,
    batch_size: int = 8,
) -> Iterator[ClipResult]:
    """Each clip of ``todo`` perceived, as :class:`ClipResult` s in completion order (``ordered``:
    in ``todo``'s order), with bounded memory. ``encode``: the encoders the engine may run itself
    (the Ray engine's actors, ``batch_size`` clips a call when they batch); a result says whether
    it did (``encoded``)."""
    engine = engine or Engine()
    if not todo:
        return
    if engine.kind == "ray":
        from emotion_llama.perception.ray_engine import ray_perceive

        yield from ray_perceive(
            todo, config, frame, subtitles, engine, encode=encode, ordered=ordered, batch_size=batch_size
        )
        return
    yield from _local_pool(todo, config, frame, engine.workers, subtitles, ordered=ordered)


def _local_pool(
    todo: list[Path],
    config: PerceptionConfig,
    frame: str,
    workers: int,
    subtitles: dict[str, str],
    *,
    ordered: bool,
) -> Iterator[ClipResult]:
    transcribe = True
    if workers <= 1:
        init_worker(config, frame, transcribe)
        for v in todo:
            yield ClipResult(v, perceive_one(str(v), subtitles.get(v.stem)))
        return
    import os

    ctx = mp.get_context("spawn")  # fork after torch/mediapipe threads start is unsafe
    threads = max(1, (os.cpu_count() or 1) // workers)  # each worker's share of the cores
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=init_worker, initargs=(config, frame, transcribe, threads)
    ) as pool:
        queue = list(todo)
        running: dict[Future[Any], Path] = {}
        order: list[Future[Any]] = []  # with ``ordered``: the oldest first
        while queue or running:
            while queue and len(running) < 2 * workers:
                v = queue.pop(0)
                fut = pool.submit(perceive_one, str(v), subtitles.get(v.stem))
                running[fut] = v
                order.append(fut)
            if ordered:
                done = {order[0]}
                wait(done)
            else:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                v = running.pop(fut)
                order.remove(fut)
                yield ClipResult(v, _outcome(fut, v))


def _outcome(fut: Future[Any], v: Path) -> Any:
    try:
        return fut.result()
    except Exception as exc:  # a worker died (e.g. a native crash): report the clip
        return EmotionLlamaError(f"{v}: worker failed ({type(exc).__name__}: {exc})")
