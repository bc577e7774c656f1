"""``annotate``: a folder of videos -> a MERR-style dataset, resumable.

Stage 1 (worker processes, per clip): perception (faces, AUs, peak frame, audio, transcript),
prosody and the tone description, AU-derived candidate labels, expression phrases, the coarse
caption; written to ``work/{name}.json`` with the peak-frame thumbnail and the AU timeline PNG.
Stage 2 (main process, batched, concurrent through the LLM backend): a label where the clip has
none (the user's list first, then the AU candidates, then the LLM), the fine reasoning, the
consistency check; written to ``records/{name}.json``. Stage 3: near-duplicates, exports (MERR
JSON, NCEV labels, subtitles, chat JSONL), the dataset report.

A rerun skips finished stages per clip; LLM answers come from the response cache, so a rerun
after a crash costs no model calls. Records are written atomically: never half a record.

What a stage writes into a clip's record is in :mod:`emotion_llama.annotate.records` (the
predictor shares it); this module runs the stages over a folder and keeps their files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emotion_llama.annotate.records import (
    SCHEMA,
    clue_record,
    describe_peak,
    filter_records,
    reason_records,
)
from emotion_llama.annotate.records import (  # imported from here by callers of the record-level API
    add_visual_objective as add_visual_objective,
)
from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.encoders.store import atomic_write_bytes, jpeg_bytes
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.names import json_bytes, record_id
from emotion_llama.perception.engines import EncodeSpec, Engine, perceive_clips
from emotion_llama.perception.extract import BatchSummary
from emotion_llama.prompts import LABELS
from emotion_llama.shards import Shard, mark_done, select


@dataclass
class AnnotateOptions:
    #: The global encoder's frame for --with-features (the peak frame is always kept for the report).
    frame: str = "first"
    workers: int = 2
    llm: str = "offline"
    labels: dict[str, str] | None = None
    subtitles: dict[str, str] | None = None
    au_threshold: float = 0.8
    au_min_share: float = 0.5
    label_set: tuple[str, ...] = LABELS
    llm_batch: int = 8
    duplicate_threshold: float = 0.9
    with_features: bool = False
    #: A vision-language endpoint for the visual objective description (openai:MODEL@URL); None: absent.
    vlm: str | None = None
    #: The encoders' device for --with-features, and the local LLM's.
    device: str = "cpu"
    progress: bool = True
    #: The local LLM's precision: float32, float16, bfloat16; None: the device's default.
    llm_dtype: str | None = None
    #: The fine reasoning's length in tokens; None: the pipeline's default.
    max_new_tokens: int | None = None
    #: Times an unfaithful LLM answer is asked again before the clue-grounded text replaces it.
    faithfulness_retries: int = 1
    #: Filter out records whose reasoning had to be written from the clues (the LLM failed the
    #: faithfulness check every time); by default they are kept, since that text is faithful.
    drop_grounded: bool = False
    #: Language of the coarse captions' clue phrases and tone words: en (MERR's), zh (Chinese; see
    #: annotate/clue_text_zh.py). The record's clue fields and the LLM's prompts stay English.
    clue_language: str = "en"
    #: Where stage 1 runs (:mod:`emotion_llama.perception.engines`); ``None``: the local pool of
    #: ``workers`` processes.
    engine: Engine | None = None
    #: Only this shard's clips, into ``OUT/shards/i-of-N`` (``emotion-llama merge OUT`` joins them).
    shard: Shard | None = None


@dataclass
class AnnotateSummary(BatchSummary):
    perceived_now: int = 0
    reasoned_now: int = 0
    kept: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    cache_misses: int = 0
    files: list[Path] = field(default_factory=list)
    balance: dict[str, Any] = field(default_factory=dict)
    #: Wall seconds per stage: clues (perception, prosody, captions), llm, export (filters, files).
    timings: dict[str, float] = field(default_factory=dict)
    #: Reasoning sources of the records: llm (first answer faithful), llm-retry, grounded.
    reasoning_sources: dict[str, int] = field(default_factory=dict)
    #: Records whose modalities disagree.
    conflicts: int = 0


# -- the stage files ---------------------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj, indent=1))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # absent, or unreadable: the stage is redone
    # a record of another schema (an older version of the builder) lacks fields: redo its stage
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


def save_clue_stage(out: Path, perception: Any, record: dict[str, Any]) -> dict[str, Any]:
    from emotion_llama.perception.action_units import plot_au_timeline

    name = perception.name
    thumb = perception.peak_frame if perception.peak_frame is not None else perception.global_frame
    if thumb is not None:
        atomic_write_bytes(out / "frames" / f"{name}.jpg", jpeg_bytes(_thumbnail(thumb)))
        record["peak_frame"] = f"frames/{name}.jpg"
    if perception.peak is not None:
        png = out / "au" / f"{name}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        plot_au_timeline(perception.timeline, png, peak=perception.peak, title=name)
        record["au_timeline_png"] = f"au/{name}.png"
    _write_json(out / "work" / f"{name}.json", record)
    return record


def _thumbnail(rgb: Any, side: int = 320) -> Any:
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    return (
        rgb
        if scale == 1.0
        else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    )


def _clue_options(options: AnnotateOptions) -> dict[str, Any]:
    """The options of :func:`~emotion_llama.annotate.records.clue_record` that a run sets."""
    return {
        "au_threshold": options.au_threshold,
        "au_min_share": options.au_min_share,
        "label_set": options.label_set,
        "clue_language": options.clue_language,
    }


# -- the whole run -----------------------------------------------------------------------------------
def annotate_folder(
    videos: str | Path,
    out: str | Path,
    config: EmotionLlamaConfig,
    options: AnnotateOptions,
    *,
    llm: Any | None = None,
    on_record: Callable[[str], None] | None = None,
    problems: Sequence[tuple[str, str]] = (),
) -> AnnotateSummary:
    from emotion_llama.backends.llm import make_llm
    from emotion_llama.perception.extract import failure_reason, scan_videos
    from emotion_llama.progress import progress_bar

    shard = options.shard
    out = shard.folder(out) if shard is not None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scan = scan_videos(videos)
    all_videos = select(scan.videos, shard, lambda v: v.stem)
    # clips the caller could not place (a manifest's: already the shard's), then the folder's
    failed = [*problems, *select(scan.problems, shard, lambda pr: Path(pr[0]).stem)]
    summary = AnnotateSummary(total=len(all_videos) + len(failed), failed=failed)
    for stale in out.rglob(".*.tmp"):
        stale.unlink(missing_ok=True)
    # Inside the dataset each clip goes by its record id: its file name when that is a plain token,
    # else a safe form of it (spaces, bytes that are not UTF-8...); ``source`` keeps the path as is.
    rid = {v: record_id(v.stem) for v in all_videos}
    labels = options.labels
    if labels:  # user labels may be keyed by the file's name or by its record id
        labels = {**{record_id(k): v for k, v in labels.items()}, **labels}
    done_final = {v for v in all_videos if _read_json(out / "records" / f"{rid[v]}.json") is not None}
    done_clues = {v for v in all_videos if _read_json(out / "work" / f"{rid[v]}.json") is not None}
    todo = [v for v in all_videos if v not in done_final and v not in done_clues]

    engine = options.engine or Engine(workers=max(1, options.workers))
    # float32, each clip alone: a dataset's features are the same bits on any device's rerun
    encode_spec = (
        EncodeSpec(config, options.device, dtype="float32", batched=False) if options.with_features else None
    )
    store = encoders = None
    if encode_spec is not None:
        from emotion_llama.encoders.store import open_store

        f = config.features
        # the dataset folder doubles as a benchmark folder: features in the authors' layout beside
        # labels.txt and subtitles.csv, so `evaluate` and the training readers read it as it is
        store = open_store(
            out,
            {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim},
            "authors",
        )
        if encode_spec.in_actors(engine):
            encode_spec.check_files()
        else:
            encoders = encode_spec.build()

    import time

    t0 = time.perf_counter()
    from emotion_llama.backends.vlm import make_describer

    describer = make_describer(options.vlm, cache=out / "llm_cache.sqlite")
    bar = progress_bar(options.progress)
    with bar:
        task = bar.add_task("clues", total=len(todo))
        if todo:
            for item in perceive_clips(
                todo, config.perception, options.frame, options.subtitles or {}, engine, encode=encode_spec
            ):
                bar.advance(task)
                path, result = item.path, item.result
                if isinstance(result, BaseException):
                    summary.failed.append((str(path), failure_reason(result, path)))
                    continue
                result = replace(result, name=rid[path])
                try:
                    record = clue_record(result, labels=labels, **_clue_options(options))
                    describe_peak(record, result, describer, clue_language=options.clue_language)
                    save_clue_stage(out, result, record)
                    if store is not None:
                        feats = item.features if item.encoded else _encode_one(result, encoders, options)
                        if feats is not None:
                            store.write(result.name, feats, frame=result.global_frame, source=result.source)
                except (EmotionLlamaError, OSError, ValueError) as exc:  # this clip alone fails
                    summary.failed.append((str(path), failure_reason(exc, path)))
                    continue
                summary.perceived_now += 1

        t1 = time.perf_counter()
        summary.timings["clues"] = t1 - t0
        pending = [
            rec
            for v in all_videos
            if v not in done_final and (rec := _read_json(out / "work" / f"{rid[v]}.json")) is not None
        ]
        if pending:
            llm = llm or make_llm(
                options.llm, cache=out / "llm_cache.sqlite", device=options.device, dtype=options.llm_dtype
            )
            task2 = bar.add_task("reasoning", total=len(pending))
            for start in range(0, len(pending), options.llm_batch):
                batch = pending[start : start + options.llm_batch]
                reason_records(
                    batch,
                    llm,
                    options.label_set,
                    max_new_tokens=options.max_new_tokens,
                    retries=options.faithfulness_retries,
                )
                for rec in batch:
                    _write_json(out / "records" / f"{rec['name']}.json", rec)
                    summary.reasoned_now += 1
                    if on_record:
                        on_record(rec["name"])
                bar.advance(task2, len(batch))
            stats = getattr(llm, "stats", None)
            if stats is not None:
                summary.cache_hits, summary.cache_misses = stats.hits, stats.misses
        summary.timings["llm"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    export_dataset(out, [(rid[v], str(v)) for v in all_videos], options, summary)
    summary.timings["export"] = time.perf_counter() - t2
    if shard is not None:
        mark_done(
            out,
            shard,
            "dataset",
            total=summary.total,
            failed=[list(f) for f in summary.failed],
            **merge_options(options),
        )
    return summary


def _encode_one(result: Any, encoders: Any, options: AnnotateOptions) -> Any:
    from emotion_llama.perception.pipeline import encode

    return encode([result], encoders, device=options.device)[0]


def merge_options(options: AnnotateOptions) -> dict[str, Any]:
    """The options of stage 3 (filters, exports): a shard records them, the merge reruns it with them."""
    return {
        "duplicate_threshold": options.duplicate_threshold,
        "drop_grounded": options.drop_grounded,
        "with_features": options.with_features,
    }


def export_dataset(
    out: Path, clips: Sequence[tuple[str, str]], options: AnnotateOptions, summary: AnnotateSummary
) -> None:
    """Stage 3 over the finished records of ``clips`` (``(record id, video)``, in the dataset's
    order): validation (a record that fails is listed in ``summary.failed``), the filters, the
    exports and the report; the counts go into ``summary``."""
    from emotion_llama.annotate.export import validate_record, write_all
    from emotion_llama.annotate.filters import class_balance
    from emotion_llama.annotate.report import write_report

    records = []
    for rid, video in clips:
        r = _read_json(out / "records" / f"{rid}.json")
        if r is None:
            continue
        try:  # a record that does not validate fails alone, with its reason, before any filter
            validate_record(r)
        except EmotionLlamaError as exc:
            summary.failed.append((video, str(exc)))
            continue
        records.append(r)
    filter_records(records, options.duplicate_threshold, drop_grounded=options.drop_grounded)
    for r in records:
        source = r.get("reasoning_source")
        if source:
            summary.reasoning_sources[source] = summary.reasoning_sources.get(source, 0) + 1
        summary.conflicts += bool(r.get("conflict"))
    summary.kept = sum(r["keep"] for r in records)
    for r in records:
        if not r["keep"]:
            key = (r["filter_reason"] or "filtered").split(":")[0]
            summary.filtered[key] = summary.filtered.get(key, 0) + 1
    summary.balance = class_balance([r["label"] for r in records if r["keep"]])
    summary.files = [*write_all(records, out), *write_report(records, out)]


def load_labels(path: str | Path) -> dict[str, str]:
    """Labels for clips: an NCEV list (``name frames label [valence]``) or a CSV ``name,label``."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
        if rows and not {"name", "label"} <= set(rows[0]):
            raise EmotionLlamaError(f"{path}: needs 'name' and 'label' columns")
        return {r["name"]: r["label"].strip().lower() for r in rows if r.get("label")}
    from emotion_llama.data.formats.lists import read_ncev

    return {c.name: c.label for c in read_ncev(path) if c.label}
