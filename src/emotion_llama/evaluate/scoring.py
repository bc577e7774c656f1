"""Scores from saved predictions (no model): classification with both answer parsers (and MER2023's
combined score when the records carry predicted valence), DFEW per fold, MER-UniBench's hit rate
for any label set, binary sentiment (MOSI, MOSEI, SIMS), EMER through a judge, open vocabulary
through the emotion wheels (words from the records, else a judge).

The rules follow the published scripts (docs/evaluation.md): a gold written as a list string
(``"['happy']"``) is split as AffectGPT splits it; an empty reference is skipped, as AffectGPT
skips it, and counted in the result (``n_empty_reference``, ``n_empty_gold``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emotion_llama.backends.llm import ChatLLM
from emotion_llama.data.samples import DataError
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.evaluate.openvocab import EmotionWheels, split_labels
from emotion_llama.evaluate.runner import SENTIMENT_LABELS, BenchmarkSpec
from emotion_llama.metrics import (
    SENTIMENT_RULES,
    SentimentRule,
    classification_report,
    sentiment_report,
    valence_mse,
)
from emotion_llama.prompts import parse_label_robust, parse_last_word

__all__ = ["missing_inputs", "score_records"]


def score_records(
    spec: BenchmarkSpec,
    records: Sequence[dict[str, Any]],
    *,
    source: str | Path = "predictions",
    judge: ChatLLM | None = None,
    wheels_dir: str | Path | None = None,
    sentiment_rule: SentimentRule = "published",
) -> dict[str, Any]:
    """The metrics of ``spec`` over ``records`` (see :mod:`emotion_llama.evaluate.peer_formats`
    for their fields). ``sentiment_rule`` decides what a neutral or unknown sentiment prediction
    counts as (:data:`emotion_llama.metrics.SENTIMENT_RULES`; the published rule by default)."""
    if not records:
        raise DataError(f"{source}: no predictions to score")
    if sentiment_rule not in SENTIMENT_RULES:
        raise EmotionLlamaError(
            f"unknown sentiment rule {sentiment_rule!r}; choose one of: {', '.join(SENTIMENT_RULES)}"
        )
    with_words = sum(_words(r, source) is not None for r in records)
    # a file with words at all: a record that lacks them where they are needed is named later
    problem = missing_inputs(
        spec, judge=judge is not None, wheels=wheels_dir is not None, words=with_words > 0
    )
    if problem:
        raise EmotionLlamaError(problem)
    if spec.kind == "classification":
        if spec.scoring == "sentiment":
            return _score_sentiment(spec, records, source, sentiment_rule)
        if spec.scoring == "hit-rate" and wheels_dir is not None:
            golds = [_gold_words(r, source) for r in records]
            if not any(golds):
                raise DataError(f"{source}: no prediction has a gold label")
            hit = _hit_rate(records, golds, judge, wheels_dir, source)
            return {"benchmark": spec.name, "n": len(records), **hit}
        result = _score_classification(spec, records, source)
        if wheels_dir is not None and (judge is not None or with_words == len(records)):
            golds = [[_label_gold(r, spec, source)] for r in records]
            result["hit_rate"] = _hit_rate(records, golds, judge, wheels_dir, source)
        elif wheels_dir is not None:
            result.setdefault("warnings", []).append(
                f"hit rate left out: {len(records) - with_words} of {len(records)} records have no "
                "emotion words ('words') and there is no --judge to extract them"
            )
        return result
    if spec.kind == "emer" and judge is not None:
        return _score_emer(records, judge, source)
    if spec.kind == "ov" and wheels_dir is not None:
        return _score_ov(records, judge, wheels_dir, source)
    raise EmotionLlamaError(f"{spec.name}: no scoring for benchmark kind {spec.kind!r}")


def missing_inputs(spec: BenchmarkSpec, *, judge: bool, wheels: bool, words: bool = False) -> str | None:
    """Why ``spec`` cannot be scored with what is given (a judge, the wheel tables, emotion words
    already in the records), or ``None``."""
    needs_wheels = spec.kind == "ov" or (spec.kind == "classification" and spec.scoring == "hit-rate")
    if needs_wheels and not wheels:
        return (
            f"scoring {spec.name} needs the emotion wheel tables (--wheels DIR); they come with the "
            "AffectGPT / OV-MER evaluation toolkit (Apache-2.0)"
        )
    if spec.kind == "emer" and not judge:
        return f"scoring {spec.name} needs an LLM judge (--judge)"
    if needs_wheels and not (judge or words):
        return (
            f"scoring {spec.name} needs the answers' emotion words: an LLM judge to extract them "
            "(--judge), or a predictions file that has them (AffectGPT's openset, a 'words' field)"
        )
    return None


# -- record fields ---------------------------------------------------------------------------------
def _where(r: dict[str, Any], source: str | Path) -> str:
    return f"{source}:{r.get('_line', '?')}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _words(r: dict[str, Any], source: str | Path) -> list[str] | None:
    """The record's already extracted emotion words (``words``), or ``None`` when it has none."""
    words = r.get("words")
    if words is None:
        return None
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise DataError(f"{_where(r, source)}: 'words' must be a list of strings, not {words!r}")
    return words


def _label_gold(r: dict[str, Any], spec: BenchmarkSpec, source: str | Path) -> str:
    """The gold label of a classification record, one of ``spec.labels``; a list (or a list
    string such as ``"['happy']"``) of one label is that label."""
    gold = r.get("gold")
    if isinstance(gold, list) or (isinstance(gold, str) and gold.strip().startswith("[")):
        words = split_labels(gold)
        gold = words[0] if len(words) == 1 else gold
    if gold not in spec.labels:
        raise DataError(
            f"{_where(r, source)}: gold label {gold!r} is not one of {spec.name}'s labels "
            f"({', '.join(spec.labels)})"
        )
    return str(gold)


def _gold_words(r: dict[str, Any], source: str | Path) -> list[str]:
    """A hit-rate gold as emotion words: a label, a list, or a list string split as AffectGPT's
    ``string_to_list`` splits it (``"['happy']"`` -> ``["happy"]``); none is ``[]``."""
    gold = r.get("gold")
    if gold is None:
        return []
    if isinstance(gold, str | list):
        return split_labels(gold)
    raise DataError(f"{_where(r, source)}: gold {gold!r} is not an emotion word or a list of them")


def _reference(r: dict[str, Any]) -> Any:
    """The record's reference (EMER description, open-vocabulary words); ``gold`` stands in when
    there is none (Emotion-LLaMA-v2's ``answer``)."""
    ref = r.get("reference")
    return ref if ref is not None else r.get("gold")


# -- classification ---------------------------------------------------------------------------------
def _score_classification(
    spec: BenchmarkSpec, records: Sequence[dict[str, Any]], source: str | Path
) -> dict[str, Any]:
    gold = [_label_gold(r, spec, source) for r in records]
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
    _add_combined(result, records, source)
    return result


def _add_combined(result: dict[str, Any], records: Sequence[dict[str, Any]], source: str | Path) -> None:
    """MER2023's combined score, weighted F1 - 0.25 x valence MSE (MERBench's ``overall_metric``),
    when every record carries a predicted valence (``pred_valence``) and a gold one (``valence``)."""
    predicted = [r for r in records if r.get("pred_valence") is not None]
    if not predicted:
        return
    for r in predicted:
        if not _is_number(r["pred_valence"]):
            raise DataError(f"{_where(r, source)}: pred_valence {r['pred_valence']!r} is not a finite number")
    usable = [r for r in predicted if _is_number(r.get("valence"))]
    if len(usable) < len(records):
        result.setdefault("warnings", []).append(
            f"combined score left out: {len(usable)} of {len(records)} records have both a predicted "
            "valence (pred_valence) and a gold one (valence); it needs them all"
        )
        return
    mse = valence_mse([r["valence"] for r in records], [r["pred_valence"] for r in records])
    result["combined"] = {
        "valence_mse": mse,
        **{key: result[key]["weighted_f1"] - 0.25 * mse for key in ("last_word", "robust")},
    }


# -- sentiment --------------------------------------------------------------------------------------
def _sentiment_gold(r: dict[str, Any], source: str | Path) -> float | str:
    """The gold of a sentiment record: its score (``valence``, else a numeric ``gold``) or its word
    (positive, negative, neutral; any case)."""
    if _is_number(r.get("valence")):
        return float(r["valence"])
    gold = r.get("gold")
    if _is_number(gold):
        return float(gold)
    if isinstance(gold, str):
        word = gold.strip().lower()
        if word in SENTIMENT_LABELS:
            return word
        number = _number(word)
        if number is not None:
            return number
    raise DataError(
        f"{_where(r, source)}: gold {gold!r} is not a sentiment: a score (0 is neutral) or one of "
        f"{', '.join(SENTIMENT_LABELS)}"
    )


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _sentiment_pred(r: dict[str, Any], parser: str, source: str | Path) -> float | str | None:
    """A record's predicted sentiment: ``pred_valence`` when given (its sign), else the answer.
    ``exact``: the whole answer, stripped and lower-cased, is a sentiment word or a number;
    ``robust``: the last sentiment word named and not negated anywhere in the answer."""
    pv = r.get("pred_valence")
    if pv is not None:
        if not _is_number(pv):
            raise DataError(f"{_where(r, source)}: pred_valence {pv!r} is not a finite number")
        return float(pv)
    if parser == "robust":
        return parse_label_robust(r["output"], SENTIMENT_LABELS)
    text = r["output"].strip().lower()
    if text in SENTIMENT_LABELS:
        return text
    return _number(text)


def _score_sentiment(
    spec: BenchmarkSpec, records: Sequence[dict[str, Any]], source: str | Path, rule: SentimentRule
) -> dict[str, Any]:
    golds = [_sentiment_gold(r, source) for r in records]
    result: dict[str, Any] = {
        "benchmark": spec.name,
        "n": len(records),
        "labels": list(SENTIMENT_LABELS),
        "sentiment_rule": rule,
        "sentiment_rule_text": SENTIMENT_RULES[rule],
    }
    for parser in ("exact", "robust"):
        preds = [_sentiment_pred(r, parser, source) for r in records]
        result[parser] = sentiment_report(golds, preds, rule=rule)
    return result


# -- hit rate ---------------------------------------------------------------------------------------
def _predicted_words(
    records: Sequence[dict[str, Any]], judge: ChatLLM | None, source: str | Path
) -> tuple[list[list[str]], bool]:
    """Each record's emotion words: its ``words``, else extracted by the judge (one batch); and
    whether the judge was asked."""
    words = [_words(r, source) for r in records]
    todo = [i for i, w in enumerate(words) if w is None]
    if todo:
        from emotion_llama.evaluate.judges import extract_emotion_words

        if judge is None:
            raise EmotionLlamaError(
                f"{_where(records[todo[0]], source)}: no emotion words in the record; extracting "
                "them needs an LLM judge (--judge)"
            )
        for i, got in zip(
            todo, extract_emotion_words(judge, [records[i]["output"] for i in todo]), strict=True
        ):
            words[i] = got
    return [w or [] for w in words], bool(todo)


def _hit_rate(
    records: Sequence[dict[str, Any]],
    golds: Sequence[list[str]],
    judge: ChatLLM | None,
    wheels_dir: str | Path,
    source: str | Path,
) -> dict[str, Any]:
    """MER-UniBench's basic-emotion score (AffectGPT's ``calculate_openset_onehot_hitrate``): per
    wheel, a sample scores the number of level-1 sectors its gold words and predicted words share
    (0 or 1 for one gold label), skipped when its gold maps to no sector on that wheel; the mean
    over samples, then over the five wheels."""
    wheels = EmotionWheels.load(wheels_dir)
    keep = [i for i, g in enumerate(golds) if g]
    kept = [records[i] for i in keep]
    preds, asked = _predicted_words(kept, judge, source) if kept else ([], False)
    gold_masks = [wheels.mask(golds[i]) for i in keep]
    pred_masks = [wheels.mask(p) for p in preds]
    per_wheel: dict[str, dict[str, Any]] = {}
    for name in wheels.wheel_names:
        offset, width = wheels.wheel_bits(name)
        bits = ((1 << width) - 1) << offset
        hits = [((g & p) & bits).bit_count() for g, p in zip(gold_masks, pred_masks, strict=True) if g & bits]
        per_wheel[name] = {"hit_rate": math.fsum(hits) / len(hits) if hits else None, "n_scored": len(hits)}
    rates = [w["hit_rate"] for w in per_wheel.values()]
    result: dict[str, Any] = {
        "hit_rate": None if None in rates else math.fsum(rates) / len(rates),
        "per_wheel": per_wheel,
        "n_scored": sum(1 for g in gold_masks if g),
        "n_empty_gold": len(records) - len(keep),
        "wheels": str(wheels_dir),
    }
    if asked and judge is not None:
        result["judge"] = judge.name
    result["extracted"] = {r["name"]: p for r, p in zip(kept, preds, strict=True)}
    return result


# -- judged: EMER and open vocabulary ------------------------------------------------------------------
def _score_emer(records: Sequence[dict[str, Any]], judge: ChatLLM, source: str | Path) -> dict[str, Any]:
    from emotion_llama.evaluate.judges import judge_overlap

    refs = [_reference(r) for r in records]
    texts = [ref if isinstance(ref, str) else ", ".join(ref) if isinstance(ref, list) else "" for ref in refs]
    keep = [i for i, t in enumerate(texts) if t.strip()]
    if not keep:
        raise DataError(f"{source}: no prediction has a 'reference' to compare with")
    scored_records = [records[i] for i in keep]
    result: dict[str, Any] = {
        "benchmark": "emer",
        "n": len(records),
        "n_empty_reference": len(records) - len(keep),
        "judge": judge.name,
    }
    for kind in ("clue", "label"):
        scored = judge_overlap(judge, [texts[i] for i in keep], [r["output"] for r in scored_records], kind)
        values = [s for s, _ in scored if s is not None]
        result[f"{kind}_overlap"] = statistics.fmean(values) if values else None
        result[f"{kind}_unparsed"] = len(scored) - len(values)
        result[f"{kind}_replies"] = {
            r["name"]: reply for r, (_, reply) in zip(scored_records, scored, strict=True)
        }
    return result


def _score_ov(
    records: Sequence[dict[str, Any]], judge: ChatLLM | None, wheels_dir: str | Path, source: str | Path
) -> dict[str, Any]:
    from emotion_llama.evaluate.openvocab import ov_scores

    golds = [split_labels(_reference(r)) if isinstance(_reference(r), str | list) else [] for r in records]
    keep = [i for i, g in enumerate(golds) if g]
    if not keep:
        raise DataError(f"{source}: no prediction has a 'reference' word list")
    kept = [records[i] for i in keep]
    preds, asked = _predicted_words(kept, judge, source)
    scores = ov_scores([golds[i] for i in keep], preds, EmotionWheels.load(wheels_dir))
    result: dict[str, Any] = {
        "benchmark": "ov",
        "n": len(records),
        "n_empty_reference": len(records) - len(keep),
    }
    if asked and judge is not None:
        result["judge"] = judge.name
    return {
        **result,
        "wheels": str(wheels_dir),
        **scores,
        "extracted": {r["name"]: p for r, p in zip(kept, preds, strict=True)},
    }
