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
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.encoders.store import atomic_write_bytes, jpeg_bytes
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.prompts import LABELS

SCHEMA = "emotion-llama-merr/1"


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
    device: str = "cpu"
    progress: bool = True


@dataclass
class AnnotateSummary:
    total: int = 0
    perceived_now: int = 0
    reasoned_now: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    kept: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    cache_misses: int = 0
    files: list[Path] = field(default_factory=list)
    balance: dict[str, Any] = field(default_factory=dict)
    #: Wall seconds per stage: clues (perception, prosody, captions), llm, export (filters, files).
    timings: dict[str, float] = field(default_factory=dict)


# -- stage 1: clues ---------------------------------------------------------------------------------
def clue_record(
    perception: Any,
    *,
    labels: dict[str, str] | None = None,
    au_threshold: float = 0.8,
    au_min_share: float = 0.5,
) -> dict[str, Any]:
    """The record of one clip from what perception found (no LLM involved)."""
    from emotion_llama.annotate.clues import candidate_labels, coarse_caption, frequent_aus
    from emotion_llama.perception.action_units import active_aus, expression_phrases
    from emotion_llama.perception.prosody import describe_tone, measure_prosody

    p = perception
    missing = list(p.missing)
    intensities: dict[str, float] = {}
    if p.peak is not None:
        row = p.timeline.intensity[p.peak]
        intensities = {n: round(float(v), 3) for n, v in zip(p.timeline.names, row, strict=True)}
    phrases = expression_phrases(intensities) if intensities else []
    prosody = measure_prosody(p.audio) if p.audio is not None else None
    tone, tone_words = describe_tone(prosody)
    text = p.transcript.text.strip() if p.transcript is not None else ""
    if p.audio is not None and prosody is None and not text:
        missing.append("speech: no voiced speech in the audio")
    candidates = candidate_labels(intensities, au_threshold, au_min_share) if intensities else []
    user_label = (labels or {}).get(p.name)
    label, source = (user_label, "user") if user_label else (None, None)
    if label is None and candidates:
        label, source = candidates[0][0], "au"
    expression = ", ".join(phrases) if phrases else None
    return {
        "schema": SCHEMA,
        "name": p.name,
        "source": p.source,
        "label": label,
        "label_source": source,
        "subtitle": text,
        "subtitle_source": p.transcript.source if p.transcript is not None else None,
        "peak_index": p.peak,
        "peak_time_s": p.peak_time,
        "AU_list": frequent_aus(p.timeline) if p.peak is not None else [],
        "peak_AU_list": active_aus(intensities) if intensities else [],
        "au_intensities": intensities,
        "visual_expression": expression,
        "visual_prior_list": phrases,
        "visual_objective": None,  # no vision-language describer configured: absent, never invented
        "audio_tone": tone,
        "audio_prior_list": tone_words,
        "prosody": prosody.to_dict() if prosody is not None else None,
        "candidate_labels": [{"label": lab, "share": round(float(s), 3)} for lab, s in candidates],
        "caption": coarse_caption(None, expression, tone, text or None),
        "smp_reason_caption": None,
        "llm_label": None,
        "llm": None,
        "keep": True,
        "filter_reason": None,
        "missing": missing,
        "peak_frame": None,
        "au_timeline_png": None,
    }


def add_visual_objective(record: dict[str, Any], description: str | None, source: str) -> None:
    """Put a vision-language description into the record and its coarse caption."""
    from emotion_llama.annotate.clues import coarse_caption

    if not description:
        record["missing"].append(f"visual objective: {source} gave no description")
        return
    record["visual_objective"] = description
    record["caption"] = coarse_caption(
        description, record["visual_expression"], record["audio_tone"], record["subtitle"] or None
    )


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # absent, or unreadable: the stage is redone


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


# -- stage 2: LLM -------------------------------------------------------------------------------------
def infer_missing_labels(
    records: list[dict[str, Any]], llm: Any, label_set: tuple[str, ...] = LABELS
) -> None:
    """Ask the LLM (one batch) for the label of every record that has none yet (no user label, no
    AU rule met); ``label_source`` says ``llm`` where it named one."""
    from emotion_llama.annotate.clues import clue_text
    from emotion_llama.annotate.reasoning import infer_labels

    need = [i for i, r in enumerate(records) if not r["label"]]
    if not need:
        return
    guessed = infer_labels(llm, [clue_text(records[i]) for i in need], list(label_set))
    for i, lab in zip(need, guessed, strict=True):
        records[i]["label"] = lab
        records[i]["label_source"] = "llm" if lab else None


def apply_reasoning(
    record: dict[str, Any], answer: str, llm_name: str, label_set: tuple[str, ...] = LABELS
) -> None:
    """Put one fine-reasoning answer into its record: the text, the label it names, the LLM, and
    the consistency check against the record's label and AU candidates."""
    from emotion_llama.annotate.filters import check_consistency
    from emotion_llama.prompts import parse_label_robust

    record["smp_reason_caption"] = answer.strip() or None
    record["llm_label"] = parse_label_robust(answer, label_set)
    record["llm"] = llm_name
    candidates = [(c["label"], c["share"]) for c in record["candidate_labels"]]
    reason = check_consistency(record["label"], candidates, answer, label_set)
    if reason:
        record["keep"], record["filter_reason"] = False, reason


def reason_records(records: list[dict[str, Any]], llm: Any, label_set: tuple[str, ...] = LABELS) -> None:
    """Fill label (LLM where still missing), fine reasoning, LLM label and the consistency check."""
    from emotion_llama.annotate.clues import clue_text
    from emotion_llama.annotate.reasoning import fine_reasoning

    infer_missing_labels(records, llm, label_set)
    todo = [i for i, r in enumerate(records) if r["label"]]
    answers = (
        fine_reasoning(llm, [clue_text(records[i]) for i in todo], [records[i]["label"] for i in todo])
        if todo
        else []
    )
    for i, answer in zip(todo, answers, strict=True):
        apply_reasoning(records[i], answer, llm.name, label_set)
    for r in records:
        if not r["label"]:
            r["keep"], r["filter_reason"] = False, "no label: none given, no AU rule met, the LLM named none"
        elif r["smp_reason_caption"] is None and r["keep"]:
            r["keep"], r["filter_reason"] = False, "the LLM gave no reasoning"


# -- the whole run -----------------------------------------------------------------------------------
def annotate_folder(
    videos: str | Path,
    out: str | Path,
    config: EmotionLlamaConfig,
    options: AnnotateOptions,
    *,
    llm: Any | None = None,
    on_record: Callable[[str], None] | None = None,
) -> AnnotateSummary:
    from emotion_llama.annotate.export import validate_record, write_all
    from emotion_llama.annotate.filters import class_balance, near_duplicates
    from emotion_llama.annotate.report import write_report
    from emotion_llama.backends.llm import make_llm
    from emotion_llama.perception.extract import list_videos, perceive_all
    from emotion_llama.progress import progress_bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    all_videos = list_videos(videos)
    summary = AnnotateSummary(total=len(all_videos))
    for stale in out.rglob(".*.tmp"):
        stale.unlink(missing_ok=True)
    done_final = {v.stem for v in all_videos if _read_json(out / "records" / f"{v.stem}.json") is not None}
    done_clues = {v.stem for v in all_videos if _read_json(out / "work" / f"{v.stem}.json") is not None}
    todo = [v for v in all_videos if v.stem not in done_final and v.stem not in done_clues]

    store = encoders = None
    if options.with_features:
        import torch

        from emotion_llama.encoders.models import build_encoders
        from emotion_llama.encoders.store import open_store

        f = config.features
        # the dataset folder doubles as a benchmark folder: features in the authors' layout beside
        # labels.txt and subtitles.csv, so `evaluate` and the training readers read it as it is
        store = open_store(
            out,
            {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim},
            "authors",
        )
        encoders = build_encoders(config, device=options.device, dtype=torch.float32)

    import time

    t0 = time.perf_counter()
    from emotion_llama.backends.vlm import make_describer

    describer = make_describer(options.vlm, cache=out / "llm_cache.sqlite")
    bar = progress_bar(options.progress)
    with bar:
        task = bar.add_task("clues", total=len(todo))
        if todo:
            for path, result in perceive_all(
                todo, config.perception, options.frame, options.workers, options.subtitles or {}
            ):
                bar.advance(task)
                if isinstance(result, BaseException):
                    summary.failed.append((str(path), str(result).removeprefix(f"{path}: ")))
                    continue
                record = clue_record(
                    result,
                    labels=options.labels,
                    au_threshold=options.au_threshold,
                    au_min_share=options.au_min_share,
                )
                if describer is not None and result.peak_frame is not None:
                    add_visual_objective(record, describer.describe([result.peak_frame])[0], describer.name)
                save_clue_stage(out, result, record)
                if store is not None and encoders is not None:
                    from emotion_llama.perception.pipeline import encode

                    feats = encode([result], encoders, device=options.device)[0]
                    if feats is not None:
                        store.write(result.name, feats, frame=result.global_frame, source=result.source)
                summary.perceived_now += 1

        t1 = time.perf_counter()
        summary.timings["clues"] = t1 - t0
        pending = [
            rec
            for v in all_videos
            if v.stem not in done_final and (rec := _read_json(out / "work" / f"{v.stem}.json")) is not None
        ]
        if pending:
            llm = llm or make_llm(options.llm, cache=out / "llm_cache.sqlite")
            task2 = bar.add_task("reasoning", total=len(pending))
            for start in range(0, len(pending), options.llm_batch):
                batch = pending[start : start + options.llm_batch]
                reason_records(batch, llm, options.label_set)
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
    records = [r for v in all_videos if (r := _read_json(out / "records" / f"{v.stem}.json")) is not None]
    dups = near_duplicates(
        [r["smp_reason_caption"] or r["caption"] for r in records], options.duplicate_threshold
    )
    for r, d in zip(records, dups, strict=True):
        if d is not None and r["keep"]:
            r["keep"], r["filter_reason"] = False, f"near-duplicate of {records[d]['name']}"
    for r in records:
        validate_record(r)
    summary.kept = sum(r["keep"] for r in records)
    for r in records:
        if not r["keep"]:
            key = (r["filter_reason"] or "filtered").split(":")[0]
            summary.filtered[key] = summary.filtered.get(key, 0) + 1
    summary.balance = class_balance([r["label"] for r in records if r["keep"]])
    summary.files = [*write_all(records, out), *write_report(records, out)]
    summary.timings["export"] = time.perf_counter() - t2
    return summary


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
    from emotion_llama.data.benchmarks import read_ncev

    return {c.name: c.label for c in read_ncev(path) if c.label}
