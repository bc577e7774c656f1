"""``extract``: a folder of videos -> a feature store, in parallel, resumable.

Worker processes decode and perceive clips (faces, AUs, audio, transcript); the main process runs
the frozen encoders in batches and writes each finished clip atomically. A clip already in the
store's manifest (with intact files) is skipped, so a rerun after a crash redoes nothing; a
broken clip is reported with its reason and never stops the others.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotion_llama.config import EmotionLlamaConfig, PerceptionConfig
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.names import printable
from emotion_llama.progress import progress_bar

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv"}


@dataclass
class BatchSummary:
    """What a batch over a folder of clips did: how many clips it saw, and each that failed, with
    why (``(name, reason)``)."""

    total: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ExtractSummary(BatchSummary):
    already_done: int = 0
    written: int = 0


@dataclass
class VideoScan:
    """A folder's videos, and the entries with a video's name that cannot be one, with why."""

    videos: list[Path]
    problems: list[tuple[str, str]]


def scan_videos(folder: str | Path) -> VideoScan:
    """The videos of ``folder`` (by extension, sorted, not recursive). An entry named like a video
    that is not a readable regular file (a folder, a named pipe, a dangling link or a link loop, an
    empty file) or whose clip name (the stem) another video already has, is listed in ``problems``
    with the reason instead: the caller reports it with the failed clips."""
    from emotion_llama.media.video import entry_problem

    folder = Path(folder)
    if not folder.is_dir():
        raise EmotionLlamaError(f"{printable(folder)}: {entry_problem(folder) or 'no such folder'}")
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise EmotionLlamaError(f"{printable(folder)}: cannot list it ({exc.strerror or exc})") from None
    videos: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: dict[str, Path] = {}
    for p in entries:
        if p.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        why = entry_problem(p)
        if why is None and p.stem in seen:
            why = f"has the clip name {printable(p.stem)!r} of {printable(seen[p.stem].name)}; rename one"
        if why is not None:
            problems.append((str(p), why))
            continue
        seen[p.stem] = p
        videos.append(p)
    return VideoScan(videos, problems)


def list_videos(folder: str | Path) -> list[Path]:
    """The readable videos of ``folder`` (see :func:`scan_videos` for the entries left out)."""
    return scan_videos(folder).videos


def failure_reason(exc: BaseException, path: str | Path) -> str:
    """A clip's failure in words, without the path it starts with (the failure table names the clip)."""
    text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
    for prefix in (f"{path}: ", f"{printable(path)}: "):
        text = text.removeprefix(prefix)
    return text


# -- worker side -------------------------------------------------------------------------------------
_PERCEIVER: Any = None


def _init_worker(config: PerceptionConfig, frame: str, transcribe: bool, threads: int = 0) -> None:
    global _PERCEIVER
    import os

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, threads)))
    from emotion_llama.perception.pipeline import Perceiver

    _PERCEIVER = Perceiver(config, frame=frame, transcribe=transcribe, threads=threads)
    # MediaPipe closes its model through a thread pool that Python shuts down before ``atexit``
    # handlers run; close it at the same stage instead, or every worker prints a traceback at exit.
    import threading

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(_PERCEIVER.close)


def _perceive_one(path: str, subtitle: str | None) -> Any:
    try:
        return _PERCEIVER(path, subtitle=subtitle)
    except EmotionLlamaError as exc:
        return exc  # reported by the main process with the clip's name
    except Exception as exc:  # a decoder or model crash on one clip must not stop the batch
        return EmotionLlamaError(f"{path}: {type(exc).__name__}: {exc}")


# -- main side ----------------------------------------------------------------------------------------
def extract_folder(
    videos: str | Path,
    out: str | Path,
    config: EmotionLlamaConfig,
    *,
    layout: str = "native",
    frame: str = "first",
    workers: int = 2,
    device: str = "cpu",
    batch_size: int = 8,
    subtitles: dict[str, str] | None = None,
    progress: bool = True,
    on_written: Callable[[str], None] | None = None,
    problems: Sequence[tuple[str, str]] = (),
) -> ExtractSummary:
    """Features of every video of ``videos`` into the store ``out`` (resumable: finished clips are
    skipped). ``problems`` are clips the caller could not place (a manifest's missing videos):
    they are counted and listed with the failures."""
    import torch

    from emotion_llama.encoders.models import build_encoders
    from emotion_llama.encoders.store import open_store
    from emotion_llama.perception.pipeline import encode

    f = config.features
    store = open_store(out, {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim}, layout)
    p = config.perception
    store.set_info(
        layout=store.layout,
        frame=frame,
        dims={"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim},
        encoders={"local": p.local_encoder, "temporal": p.temporal_encoder, "audio": p.audio_encoder},
        asr=p.asr_model,
        face_size=p.face_size,
        analysis_fps=p.analysis_fps,
    )
    store.clean_partial()
    scan = scan_videos(videos)
    all_videos = scan.videos
    failed = [*problems, *scan.problems]
    summary = ExtractSummary(total=len(all_videos) + len(failed), failed=failed)
    todo = [v for v in all_videos if not store.is_done(v.stem)]
    summary.already_done = len(all_videos) - len(todo)
    if not todo:
        return summary
    encoders = build_encoders(config, device=device, dtype=torch.float32)
    pending: list[Any] = []

    def flush() -> None:
        if not pending:
            return
        feats = encode(pending, encoders, device=device)
        for result, feat in zip(pending, feats, strict=True):
            if feat is None:
                summary.failed.append((result.source, "; ".join(result.missing) or "no features"))
                continue
            try:
                store.write(
                    result.name, feat, frame=result.global_frame, clues=result.record(), source=result.source
                )
            except OSError as exc:  # e.g. a name too long for a file beside its suffix: this clip alone
                summary.failed.append((result.source, f"cannot write its features ({exc.strerror or exc})"))
                continue
            except EmotionLlamaError as exc:  # e.g. a non-finite vector
                summary.failed.append((result.source, str(exc)))
                continue
            summary.written += 1
            if on_written:
                on_written(result.name)
        pending.clear()

    bar = progress_bar(progress)
    with bar:
        task = bar.add_task("extract", total=len(todo))
        for path, result in perceive_all(todo, p, frame, workers, subtitles or {}):
            bar.advance(task)
            if isinstance(result, BaseException):
                summary.failed.append((str(path), failure_reason(result, path)))
                continue
            pending.append(result)
            if len(pending) >= batch_size:
                flush()
        flush()
    return summary


def perceive_all(
    todo: list[Path], config: PerceptionConfig, frame: str, workers: int, subtitles: dict[str, str]
) -> Iterator[tuple[Path, Any]]:
    """Results in completion order, with at most 2 clips per worker in flight (bounded memory)."""
    transcribe = True
    if workers <= 1:
        _init_worker(config, frame, transcribe)
        for v in todo:
            yield v, _perceive_one(str(v), subtitles.get(v.stem))
        return
    import os

    ctx = mp.get_context("spawn")  # fork after torch/mediapipe threads start is unsafe
    threads = max(1, (os.cpu_count() or 1) // workers)  # each worker's share of the cores
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(config, frame, transcribe, threads)
    ) as pool:
        queue = list(todo)
        running: dict[Future[Any], Path] = {}
        while queue or running:
            while queue and len(running) < 2 * workers:
                v = queue.pop(0)
                running[pool.submit(_perceive_one, str(v), subtitles.get(v.stem))] = v
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                v = running.pop(fut)
                try:
                    yield v, fut.result()
                except Exception as exc:  # a worker died (e.g. a native crash): report the clip
                    yield v, EmotionLlamaError(f"{v}: worker failed ({type(exc).__name__}: {exc})")
