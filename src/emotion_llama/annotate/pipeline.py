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
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.encoders.store import atomic_write_bytes, jpeg_bytes
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.names import json_bytes, record_id
from emotion_llama.prompts import LABELS

SCHEMA = "emotion-llama-merr/2"


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
    #: Reasoning sources of the records: llm (first answer faithful), llm-retry, grounded.
    reasoning_sources: dict[str, int] = field(default_factory=dict)
    #: Records whose modalities disagree.
    conflicts: int = 0


# -- stage 1: clues ---------------------------------------------------------------------------------
def clue_record(
    perception: Any,
    *,
    labels: dict[str, str] | None = None,
    au_threshold: float = 0.8,
    au_min_share: float = 0.5,
    label_set: tuple[str, ...] = LABELS,
) -> dict[str, Any]:
    """The record of one clip from what perception found (no LLM involved): the clues, each
    modality's vote (face, voice, words), their fusion into a label and a conflict flag."""
    from emotion_llama.annotate.clues import (
        candidate_labels,
        coarse_caption,
        face_vote,
        frequent_aus,
        in_episodes,
    )
    from emotion_llama.annotate.fusion import fuse, voice_vote, words_vote
    from emotion_llama.perception.action_units import (
        au_baseline,
        cry_episodes,
        expressed_aus,
        expression_phrases,
        eye_events,
    )
    from emotion_llama.perception.prosody import describe_tone, measure_prosody

    p = perception
    missing = list(p.missing)
    tl = p.timeline
    intensities: dict[str, float] = {}
    if p.peak is not None:
        row = tl.intensity[p.peak]
        intensities = {n: round(float(v), 3) for n, v in zip(tl.names, row, strict=True)}
    baseline = au_baseline(tl) if p.peak is not None else None
    phrases = expression_phrases(intensities, baseline=baseline) if intensities else []
    eyes = eye_events(tl) if p.peak is not None else None
    eye_phrases = eyes.phrases() if eyes is not None else []
    words = p.transcript.words if p.transcript is not None and p.transcript.words else None
    prosody = measure_prosody(p.audio, words=words) if p.audio is not None else None
    tone, tone_words = describe_tone(prosody)
    text = p.transcript.text.strip() if p.transcript is not None else ""
    if p.audio is not None and prosody is None and not text:
        missing.append("speech: no voiced speech in the audio")
    peak_cry = p.peak is not None and in_episodes(float(tl.times[p.peak]), cry_episodes(tl, au_threshold))
    candidates = (
        candidate_labels(intensities, au_threshold, au_min_share, cry=peak_cry) if intensities else []
    )
    face = face_vote(tl, label_set, au_threshold, au_min_share) if p.peak is not None else None
    voice = voice_vote(prosody, label_set)
    said = words_vote(text, label_set)
    fusion = fuse(face, voice, said, label_set)
    user_label = (labels or {}).get(p.name)
    if user_label:
        label, source = user_label, "user"
    else:
        label, source = fusion.label, fusion.label_source
    visual = [*phrases, *eye_phrases]
    expression = ", ".join(visual) if visual else None
    face_dict = None
    if face is not None:
        face_dict = face.to_dict()
        if not face_dict["evidence"]:
            face_dict["evidence"] = phrases
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
        "AU_list": frequent_aus(tl) if p.peak is not None else [],
        "peak_AU_list": expressed_aus(intensities, baseline) if intensities else [],
        "au_intensities": intensities,
        "visual_expression": expression,
        "visual_prior_list": visual,
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
        "eyes": eyes.to_dict() if eyes is not None else None,
        "modalities": {
            "face": face_dict,
            "voice": voice.to_dict() if voice is not None else None,
            "words": said.to_dict() if said is not None else None,
        },
        "conflict": fusion.conflict,
        "conflict_reason": fusion.conflict_reason,
        "reasoning_source": None,
        "faithfulness": None,
        "rejected_reasoning": [],
        "model_answer": None,
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


# -- stage 2: LLM -------------------------------------------------------------------------------------
def infer_missing_labels(
    records: list[dict[str, Any]], llm: Any, label_set: tuple[str, ...] = LABELS
) -> None:
    """Ask the LLM (one batch) for the label of every record that has none yet (no user label, no
    modality voted); ``label_source`` says ``llm`` where it named one."""
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
    record: dict[str, Any],
    answer: str,
    llm_name: str,
    label_set: tuple[str, ...] = LABELS,
    *,
    source: str | None = "llm",
) -> None:
    """Put one fine-reasoning answer into its record: the text, the label it names, the LLM, who
    wrote it (``source``), and the consistency check against the record's label and AU candidates."""
    from emotion_llama.annotate.filters import check_consistency
    from emotion_llama.prompts import parse_label_robust

    record["smp_reason_caption"] = answer.strip() or None
    record["llm_label"] = parse_label_robust(answer, label_set)
    record["llm"] = llm_name
    record["reasoning_source"] = source if answer.strip() else None
    candidates = [(c["label"], c["share"]) for c in record["candidate_labels"]]
    reason = check_consistency(record["label"], candidates, answer, label_set)
    if reason:
        record["keep"], record["filter_reason"] = False, reason


_PERCENT = re.compile(r"\d+(?:\.\d+)?\s*%")


def answer_problems(text: str, record: dict[str, Any], label_set: tuple[str, ...] = LABELS) -> list[str]:
    """What an answer gets wrong beyond the evidence rules: it concludes another label than the
    record's (the last label it names, negations skipped), or it cites a percentage no clue gives
    (weak models invent "38% of its AUs")."""
    from emotion_llama.annotate.clues import clue_text
    from emotion_llama.prompts import parse_label_robust

    out = []
    label = record.get("label")
    concluded = parse_label_robust(text, label_set)
    if label and concluded and concluded != label:
        out.append(f"concludes '{concluded}' but the label is '{label}'")
    given = {m.replace(" ", "") for m in _PERCENT.findall(clue_text(record))}
    invented = sorted({m.replace(" ", "") for m in _PERCENT.findall(text)} - given)
    if invented:
        out.append(f"cites {', '.join(invented)}, which no clue gives")
    return out


def grounded_answers(
    records: list[dict[str, Any]],
    answers: list[str | None],
    retry: Callable[[list[int], list[str], list[list[str]]], list[str]] | None,
    *,
    retries: int = 1,
    label_set: tuple[str, ...] = LABELS,
) -> list[tuple[str, str]]:
    """The faithfulness check (:mod:`emotion_llama.annotate.faithfulness`, plus
    :func:`answer_problems`) on each answer. One that
    names evidence the clip does not support is asked again, up to ``retries`` times, through
    ``retry(indices, previous_answers, problems) -> new answers``; if it still fails it is replaced by
    an explanation written from the clues alone (:func:`grounded_reasoning`). Returns
    ``(text, source)`` per record, ``source`` being ``llm``, ``llm-retry`` or ``grounded``; ``("", "")``
    where the answer is ``None`` (nothing was asked). Each answered record gets ``faithfulness``
    (``ok``, ``source``, ``attempts``, the first answer's problems) and ``rejected_reasoning``."""
    from emotion_llama.annotate.faithfulness import check_reasoning, evidence_from_record, grounded_reasoning

    evidence = [evidence_from_record(r) for r in records]

    def problems_of(i: int, text: str) -> list[str]:
        return [*check_reasoning(text, evidence[i]).problems, *answer_problems(text, records[i], label_set)]

    result: list[tuple[str, str]] = [("", "")] * len(records)
    current = {i: a for i, a in enumerate(answers) if a is not None}
    attempts = dict.fromkeys(current, 0)
    first_problems: dict[int, list[str]] = {}
    rejected: dict[int, list[str]] = {i: [] for i in current}
    todo = list(current)
    round_ = 0
    while todo:
        failing: list[tuple[int, list[str]]] = []
        for i in todo:
            found = problems_of(i, current[i])
            attempts[i] += 1
            first_problems.setdefault(i, found)
            if not found:
                result[i] = (current[i].strip(), "llm" if round_ == 0 else "llm-retry")
            else:
                rejected[i].append(current[i].strip())
                failing.append((i, found))
        if not failing:
            break
        if round_ >= retries or retry is None:
            for i, _ in failing:
                result[i] = (grounded_reasoning(evidence[i], records[i].get("label")), "grounded")
            break
        round_ += 1
        idx = [i for i, _ in failing]
        for i, a in zip(idx, retry(idx, [current[i] for i in idx], [pr for _, pr in failing]), strict=True):
            current[i] = a
        todo = idx
    for i in current:
        text, source = result[i]
        records[i]["faithfulness"] = {
            "ok": not problems_of(i, text),
            "source": source,
            "attempts": attempts[i],
            "first_answer_ok": not first_problems[i],
            "first_answer_problems": first_problems[i],
        }
        records[i]["rejected_reasoning"] = [t for t in rejected[i] if t]
    return result


def reason_records(
    records: list[dict[str, Any]],
    llm: Any,
    label_set: tuple[str, ...] = LABELS,
    *,
    max_new_tokens: int | None = None,
    retries: int = 1,
) -> None:
    """Fill label (LLM where still missing), fine reasoning (checked for faithfulness, retried, else
    written from the clues), LLM label and the consistency check."""
    from emotion_llama.annotate.clues import clue_text
    from emotion_llama.annotate.reasoning import fine_reasoning, reasoning_params, retry_conversation

    params = reasoning_params(max_new_tokens)
    infer_missing_labels(records, llm, label_set)
    todo = [i for i, r in enumerate(records) if r["label"]]
    texts = [clue_text(records[i]) for i in todo]
    labels = [str(records[i]["label"]) for i in todo]
    answers = fine_reasoning(llm, texts, labels, params) if todo else []

    def retry(idx: list[int], previous: list[str], problems: list[list[str]]) -> list[str]:
        conversations = [
            retry_conversation(texts[k], labels[k], prev, probs)
            for k, prev, probs in zip(idx, previous, problems, strict=True)
        ]
        return [a.strip() for a in llm.chat_many(conversations, params)]

    asked = [a if t.strip() else None for a, t in zip(answers, texts, strict=True)]
    checked = grounded_answers([records[i] for i in todo], asked, retry, retries=retries, label_set=label_set)
    for (text, source), i in zip(checked, todo, strict=True):
        if source:
            apply_reasoning(records[i], text, llm.name, label_set, source=source)
    for r in records:
        if not r["label"]:
            r["keep"], r["filter_reason"] = (
                False,
                "no label: none given, no modality voted, the LLM named none",
            )
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
    from emotion_llama.perception.extract import failure_reason, perceive_all, scan_videos
    from emotion_llama.progress import progress_bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scan = scan_videos(videos)
    all_videos = scan.videos
    summary = AnnotateSummary(total=len(all_videos) + len(scan.problems), failed=list(scan.problems))
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
                    summary.failed.append((str(path), failure_reason(result, path)))
                    continue
                result = replace(result, name=rid[path])
                try:
                    record = clue_record(
                        result,
                        labels=labels,
                        au_threshold=options.au_threshold,
                        au_min_share=options.au_min_share,
                        label_set=options.label_set,
                    )
                    if describer is not None and result.peak_frame is not None:
                        add_visual_objective(
                            record, describer.describe([result.peak_frame])[0], describer.name
                        )
                    save_clue_stage(out, result, record)
                    if store is not None and encoders is not None:
                        from emotion_llama.perception.pipeline import encode

                        feats = encode([result], encoders, device=options.device)[0]
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
    records = []
    for v in all_videos:
        r = _read_json(out / "records" / f"{rid[v]}.json")
        if r is None:
            continue
        try:  # a record that does not validate fails alone, with its reason, before any filter
            validate_record(r)
        except EmotionLlamaError as exc:
            summary.failed.append((str(v), str(exc)))
            continue
        records.append(r)
    dups = near_duplicates(
        [r["smp_reason_caption"] or r["caption"] for r in records], options.duplicate_threshold
    )
    for r, d in zip(records, dups, strict=True):
        if d is not None and r["keep"]:
            r["keep"], r["filter_reason"] = False, f"near-duplicate of {records[d]['name']}"
    for r in records:
        if options.drop_grounded and r["keep"] and r.get("reasoning_source") == "grounded":
            r["keep"] = False
            r["filter_reason"] = (
                "unfaithful reasoning: every LLM answer named evidence the clip does not support"
            )
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
