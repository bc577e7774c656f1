"""Scores from saved predictions (no model): classification with both answer parsers, DFEW per
fold, EMER through a judge, open vocabulary through a judge and the emotion wheels."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emotion_llama.backends.llm import ChatLLM
from emotion_llama.data.samples import DataError
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.evaluate.runner import BenchmarkSpec
from emotion_llama.metrics import classification_report
from emotion_llama.prompts import parse_label_robust, parse_last_word


def score_records(
    spec: BenchmarkSpec,
    records: Sequence[dict[str, Any]],
    *,
    source: str | Path = "predictions",
    judge: ChatLLM | None = None,
    wheels_dir: str | Path | None = None,
) -> dict[str, Any]:
    if not records:
        raise DataError(f"{source}: no predictions to score")
    if spec.kind == "classification":
        result = _score_classification(spec, records, source)
        if judge is not None and wheels_dir is not None:
            result["hit_rate"] = _hit_rate(records, judge, wheels_dir)
        return result
    if judge is None:
        raise EmotionLlamaError(f"scoring {spec.name} needs an LLM judge (--judge)")
    if spec.kind == "emer":
        return _score_emer(records, judge, source)
    if wheels_dir is None:
        raise EmotionLlamaError(
            "open-vocabulary scoring needs the emotion wheel tables (--wheels DIR); they come with the "
            "AffectGPT / OV-MER evaluation toolkit (Apache-2.0)"
        )
    return _score_ov(records, judge, wheels_dir, source)


def _check_gold(spec: BenchmarkSpec, records: Sequence[dict[str, Any]], source: str | Path) -> None:
    for r in records:
        gold = r.get("gold")
        if gold not in spec.labels:
            raise DataError(
                f"{source}:{r.get('_line', '?')}: gold label {gold!r} is not one of {spec.name}'s labels "
                f"({', '.join(spec.labels)})"
            )


def _score_classification(spec: BenchmarkSpec, records: Sequence[dict[str, Any]], source: str | Path) -> dict:
    _check_gold(spec, records, source)
    gold = [r["gold"] for r in records]
    last = [parse_last_word(r["output"], spec.labels, spec.default_label) for r in records]
    robust = [parse_label_robust(r["output"], spec.labels) or spec.default_label for r in records]
    result: dict[str, Any] = {
        "benchmark": spec.name,
        "n": len(records),
        "labels": list(spec.labels),
        "last_word": classification_report(gold, last, list(spec.labels)),
        "robust": classification_report(gold, robust, list(spec.labels)),
        "unparsed_last_word": sum(parse_last_word(r["output"], spec.labels, "\0") == "\0" for r in records),
        "unparsed_robust": sum(parse_label_robust(r["output"], spec.labels) is None for r in records),
    }
    if spec.folds:
        per_fold = {}
        for fold in sorted({r.get("fold", "") for r in records}):
            idx = [i for i, r in enumerate(records) if r.get("fold", "") == fold]
            rep = classification_report([gold[i] for i in idx], [last[i] for i in idx], list(spec.labels))
            per_fold[fold] = {"uar": rep["uar"], "war": rep["war"], "n": len(idx)}
        result["folds"] = per_fold
        result["mean_over_folds"] = {
            "uar": statistics.fmean(f["uar"] for f in per_fold.values()),
            "war": statistics.fmean(f["war"] for f in per_fold.values()),
        }
    return result


def _reference_text(r: dict[str, Any], source: str | Path) -> str:
    ref = r.get("reference")
    if not ref:
        raise DataError(f"{source}:{r.get('_line', '?')}: prediction has no 'reference' to compare with")
    return ref if isinstance(ref, str) else ", ".join(ref)


def _score_emer(records: Sequence[dict[str, Any]], judge: ChatLLM, source: str | Path) -> dict:
    from emotion_llama.evaluate.judges import judge_overlap

    refs = [_reference_text(r, source) for r in records]
    outs = [r["output"] for r in records]
    result: dict[str, Any] = {"benchmark": "emer", "n": len(records), "judge": judge.name}
    for kind in ("clue", "label"):
        scored = judge_overlap(judge, refs, outs, kind)
        values = [s for s, _ in scored if s is not None]
        result[f"{kind}_overlap"] = statistics.fmean(values) if values else None
        result[f"{kind}_unparsed"] = len(scored) - len(values)
        result[f"{kind}_replies"] = {r["name"]: reply for r, (_, reply) in zip(records, scored, strict=True)}
    return result


def _score_ov(
    records: Sequence[dict[str, Any]], judge: ChatLLM, wheels_dir: str | Path, source: str | Path
) -> dict:
    from emotion_llama.evaluate.judges import extract_emotion_words
    from emotion_llama.evaluate.openvocab import EmotionWheels, ov_scores

    wheels = EmotionWheels.load(wheels_dir)
    golds = [r.get("reference") for r in records]
    for r, g in zip(records, golds, strict=True):
        if not g:
            raise DataError(f"{source}:{r.get('_line', '?')}: prediction has no 'reference' word list")
    preds = extract_emotion_words(judge, [r["output"] for r in records])
    scores = ov_scores(golds, preds, wheels)
    return {
        "benchmark": "ov",
        "n": len(records),
        "judge": judge.name,
        "wheels": str(wheels_dir),
        **scores,
        "extracted": {r["name"]: p for r, p in zip(records, preds, strict=True)},
    }


def _hit_rate(records: Sequence[dict[str, Any]], judge: ChatLLM, wheels_dir: str | Path) -> dict[str, Any]:
    """MER-UniBench's basic-emotion score: the judge extracts emotion words from each answer; a hit
    is the gold label's wheel sector among theirs (averaged over the five wheels)."""
    from emotion_llama.evaluate.judges import extract_emotion_words
    from emotion_llama.evaluate.openvocab import EmotionWheels, hit_rate

    preds = extract_emotion_words(judge, [r["output"] for r in records])
    scores = hit_rate([r["gold"] for r in records], preds, EmotionWheels.load(wheels_dir))
    return {"judge": judge.name, **scores}
