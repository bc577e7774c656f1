"""``extract``: a folder of videos -> a feature store, in parallel, resumable.

Worker processes decode and perceive clips (faces, AUs, audio, transcript); the main process runs
the frozen encoders in batches and writes each finished clip atomically. A clip already in the
store's manifest (with intact files) is skipped, so a rerun after a crash redoes nothing; a
broken clip is reported with its reason and never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotion_llama.config import EmotionLlamaConfig, PerceptionConfig
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.names import printable
from emotion_llama.perception.engines import EncodeSpec, Engine, perceive_clips
from emotion_llama.perception.workers import LEGACY_ENCODING
from emotion_llama.progress import progress_bar
from emotion_llama.shards import Shard, mark_done, select

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
    engine: Engine | None = None,
    shard: Shard | None = None,
    encode: EncodeSpec | None = None,
) -> ExtractSummary:
    """Features of every video of ``videos`` into the store ``out`` (resumable: finished clips are
    skipped). ``problems`` are clips the caller could not place (a manifest's missing videos):
    they are counted and listed with the failures.

    ``engine``: where the clips are perceived (default: the local pool of ``workers``
    processes). ``shard``: only that shard's clips, into ``out/shards/i-of-N`` (``problems`` are
    then the shard's: the caller sharded them), with ``shard.json`` written there at the end.
    ``encode``: the encoders' settings for the engine (default: ``config``'s on ``device``)."""
    engine = engine or Engine(workers=max(1, workers))
    encode = encode or EncodeSpec(config, device)
    root = shard.folder(out) if shard is not None else Path(out)
    summary = _extract(
        videos,
        root,
        config,
        layout,
        frame,
        batch_size,
        subtitles or {},
        progress,
        on_written,
        problems,
        engine,
        shard,
        encode,
    )
    if shard is not None:
        mark_done(
            root,
            shard,
            "features",
            layout=layout,
            total=summary.total,
            written=summary.written,
            already_done=summary.already_done,
            failed=[list(f) for f in summary.failed],
        )
    return summary


def _extract(
    videos: str | Path,
    out: Path,
    config: EmotionLlamaConfig,
    layout: str,
    frame: str,
    batch_size: int,
    subtitles: dict[str, str],
    progress: bool,
    on_written: Callable[[str], None] | None,
    problems: Sequence[tuple[str, str]],
    engine: Engine,
    shard: Shard | None,
    encode: EncodeSpec,
) -> ExtractSummary:
    from emotion_llama.encoders.store import open_store
    from emotion_llama.perception.pipeline import encode_each

    f = config.features
    store = open_store(out, {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim}, layout)
    p = config.perception
    if store.manifest.get("clips"):
        made = store.manifest.setdefault("encoding", dict(LEGACY_ENCODING))  # made before the key
        if made != encode.info():
            flags = "--dtype, --fp8, --batch-encoders/--clip-by-clip"
            raise EmotionLlamaError(
                f"{out}: its features were encoded with {_encoding(made)}, this run would use "
                f"{_encoding(encode.info())}; rerun with the options that made them ({flags}) or "
                "use another output folder"
            )
    store.set_info(
        layout=store.layout,
        frame=frame,
        dims={"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim},
        encoders={"local": p.local_encoder, "temporal": p.temporal_encoder, "audio": p.audio_encoder},
        asr=p.asr_model,
        face_size=p.face_size,
        analysis_fps=p.analysis_fps,
        encoding=encode.info(),
    )
    store.clean_partial()
    scan = scan_videos(videos)
    all_videos = select(scan.videos, shard, lambda v: v.stem)
    failed = [*problems, *select(scan.problems, shard, lambda pr: Path(pr[0]).stem)]
    summary = ExtractSummary(total=len(all_videos) + len(failed), failed=failed)
    todo = [v for v in all_videos if not store.is_done(v.stem)]
    summary.already_done = len(all_videos) - len(todo)
    if not todo:
        return summary
    # the driver's encoders, loaded before any clip (a model that cannot load fails at once), unless
    # the engine runs them (Ray's actor pool)
    encoders: Any = None
    if encode.in_actors(engine):
        encode.check_files()
    else:
        encoders = encode.build()
    pending: list[Any] = []

    def write(result: Any, feat: Any) -> None:
        if isinstance(feat, Exception):
            summary.failed.append((result.source, f"the encoders failed ({type(feat).__name__}: {feat})"))
            return
        if feat is None:
            summary.failed.append((result.source, "; ".join(result.missing) or "no features"))
            return
        try:
            store.write(
                result.name, feat, frame=result.global_frame, clues=result.record(), source=result.source
            )
        except OSError as exc:  # e.g. a name too long for a file beside its suffix: this clip alone
            summary.failed.append((result.source, f"cannot write its features ({exc.strerror or exc})"))
            return
        except EmotionLlamaError as exc:  # e.g. a non-finite vector
            summary.failed.append((result.source, str(exc)))
            return
        summary.written += 1
        if on_written:
            on_written(result.name)

    def flush() -> None:
        if not pending:  # always so when the engine encodes: its results come encoded
            return
        feats = encode_each(pending, encoders, device=encode.device, batched=encode.batches)
        for result, feat in zip(pending, feats, strict=True):
            write(result, feat)
        pending.clear()

    bar = progress_bar(progress)
    with bar:
        task = bar.add_task("extract", total=len(todo))
        for item in perceive_clips(todo, p, frame, subtitles, engine, encode=encode, batch_size=batch_size):
            bar.advance(task)
            if isinstance(item.result, BaseException):
                summary.failed.append((str(item.path), failure_reason(item.result, item.path)))
            elif item.encoded:
                write(item.result, item.features)
            else:
                pending.append(item.result)
                if len(pending) >= batch_size:
                    flush()
        flush()
    return summary


def _encoding(info: dict[str, Any]) -> str:
    batches = "batched" if info.get("batched") else "clip by clip"
    return f"{info.get('dtype')}{' + FP8' if info.get('fp8') else ''}, {batches}"


def perceive_all(
    todo: list[Path],
    config: PerceptionConfig,
    frame: str,
    workers: int,
    subtitles: dict[str, str],
    engine: Engine | None = None,
) -> Iterator[tuple[Path, Any]]:
    """``(path, Perception or error)`` in completion order, with bounded memory: the local pool of
    ``workers`` processes unless ``engine`` says otherwise (:mod:`emotion_llama.perception.engines`)."""
    engine = engine or Engine(workers=max(1, workers))
    for item in perceive_clips(todo, config, frame, subtitles, engine):
        yield item.path, item.result
