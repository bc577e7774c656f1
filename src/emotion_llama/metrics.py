"""Classification metrics for emotion recognition, in pure Python and numpy.

Labels are strings. Where a function takes ``labels``, it fixes the class order; when it is None the
sorted union of ``y_true`` and ``y_pred`` is used. Zero divisions give 0.0 (scikit-learn's
``zero_division=0``). Bad input raises :class:`MetricsError`, a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Sequence
from typing import Any, Literal

import numpy as np

from emotion_llama.errors import EmotionLlamaError

__all__ = [
    "NEGATIVE_WORDS",
    "POSITIVE_WORDS",
    "SENTIMENT_RULES",
    "MetricsError",
    "SentimentRule",
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "f1",
    "mer2023_combined",
    "per_class_scores",
    "sentiment_report",
    "sentiment_side",
    "sentiment_weighted_f1",
    "uar",
    "valence_mse",
    "war",
]

Average = Literal["weighted", "macro", "micro"]


class MetricsError(EmotionLlamaError, ValueError):
    """Metric inputs are empty, of different lengths, or otherwise unusable."""


def _as_list(values: Iterable[Any], name: str) -> list[Any]:
    if isinstance(values, str):
        raise MetricsError(f"{name} must be a sequence of labels, not a single string")
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise MetricsError(f"{name} must be one-dimensional, got shape {values.shape}")
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _pair(y_true: Iterable[Any], y_pred: Iterable[Any], what: str = "y") -> tuple[list[Any], list[Any]]:
    t = _as_list(y_true, f"{what}_true")
    p = _as_list(y_pred, f"{what}_pred")
    if len(t) != len(p):
        raise MetricsError(f"{what}_true and {what}_pred differ in length: {len(t)} != {len(p)}")
    if not t:
        raise MetricsError(f"{what}_true and {what}_pred are empty")
    return t, p


def _labels(t: list[Any], p: list[Any], labels: Sequence[Hashable] | None) -> list[Any]:
    if labels is None:
        try:
            return sorted(set(t) | set(p))
        except TypeError as e:
            raise MetricsError("labels of mixed types cannot be sorted; pass `labels` explicitly") from e
    out = _as_list(labels, "labels")
    if not out:
        raise MetricsError("labels is empty")
    if len(set(out)) != len(out):
        dupes = sorted({str(x) for x in out if out.count(x) > 1})
        raise MetricsError(f"labels has duplicates: {dupes}")
    return out


def _indices(values: list[Any], index: dict[Any, int]) -> np.ndarray:
    """Position of each value in ``index``; -1 for values outside it."""
    return np.fromiter((index.get(v, -1) for v in values), dtype=np.intp, count=len(values))


def _counts(t: list[Any], p: list[Any], labels: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, predicted counts and true counts (support) per label."""
    index = {lab: i for i, lab in enumerate(labels)}
    ti, pi = _indices(t, index), _indices(p, index)
    k = len(labels)
    hit = (ti >= 0) & (ti == pi)
    tp = np.bincount(ti[hit], minlength=k)
    pred_sum = np.bincount(pi[pi >= 0], minlength=k)
    true_sum = np.bincount(ti[ti >= 0], minlength=k)
    return tp, pred_sum, true_sum


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def confusion_matrix(
    y_true: Iterable[str], y_pred: Iterable[str], labels: Sequence[str] | None = None
) -> np.ndarray:
    """Counts with rows = true label and columns = predicted label, in ``labels`` order.

    Samples whose true or predicted label is outside ``labels`` are not counted (as in scikit-learn).
    """
    t, p = _pair(y_true, y_pred)
    labs = _labels(t, p, labels)
    index = {lab: i for i, lab in enumerate(labs)}
    ti, pi = _indices(t, index), _indices(p, index)
    keep = (ti >= 0) & (pi >= 0)
    k = len(labs)
    return np.bincount(ti[keep] * k + pi[keep], minlength=k * k).reshape(k, k).astype(np.int64)


def accuracy(y_true: Iterable[str], y_pred: Iterable[str]) -> float:
    """Fraction of exact matches over all samples (this is WAR)."""
    t, p = _pair(y_true, y_pred)
    return sum(a == b for a, b in zip(t, p, strict=True)) / len(t)


def war(y_true: Iterable[str], y_pred: Iterable[str]) -> float:
    """Weighted average recall: the same number as :func:`accuracy`."""
    return accuracy(y_true, y_pred)


def per_class_scores(
    y_true: Iterable[str], y_pred: Iterable[str], labels: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Precision, recall, f1 and support for each label, in ``labels`` order."""
    t, p = _pair(y_true, y_pred)
    labs = _labels(t, p, labels)
    tp, pred_sum, true_sum = _counts(t, p, labs)
    precision = _div(tp, pred_sum)
    recall = _div(tp, true_sum)
    f = _div(2 * tp, pred_sum + true_sum)
    return {
        lab: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f[i]),
            "support": float(true_sum[i]),
        }
        for i, lab in enumerate(labs)
    }


def f1(
    y_true: Iterable[str],
    y_pred: Iterable[str],
    labels: Sequence[str] | None = None,
    average: Average = "weighted",
) -> float:
    """F1 score averaged over ``labels``; equals ``sklearn.metrics.f1_score(..., zero_division=0)``.

    ``weighted`` weights each label by its support, ``macro`` is the plain mean over all labels,
    ``micro`` pools counts over the labels.
    """
    if average not in ("weighted", "macro", "micro"):
        raise MetricsError(f"average must be 'weighted', 'macro' or 'micro', got {average!r}")
    t, p = _pair(y_true, y_pred)
    labs = _labels(t, p, labels)
    tp, pred_sum, true_sum = _counts(t, p, labs)
    if average == "micro":
        return float(_div(2 * tp.sum(), pred_sum.sum() + true_sum.sum()))
    per = _div(2 * tp, pred_sum + true_sum)
    if average == "macro":
        return float(per.mean())
    total = true_sum.sum()
    return float((per * true_sum).sum() / total) if total > 0 else 0.0


def uar(y_true: Iterable[str], y_pred: Iterable[str], labels: Sequence[str] | None = None) -> float:
    """Unweighted average recall: mean recall over the labels that occur in ``y_true``.

    Labels in ``labels`` with zero support are left out of the mean.
    """
    t, p = _pair(y_true, y_pred)
    labs = _labels(t, p, labels)
    tp, _, true_sum = _counts(t, p, labs)
    present = true_sum > 0
    if not present.any():
        raise MetricsError("no label in `labels` occurs in y_true; UAR is undefined")
    return float((tp[present] / true_sum[present]).mean())


def valence_mse(true: Iterable[float], pred: Iterable[float]) -> float:
    """Mean squared error between true and predicted valence."""
    t, p = _pair(true, pred, what="valence")
    try:
        a = np.asarray(t, dtype=np.float64)
        b = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise MetricsError(f"valence values must be numbers: {e}") from e
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise MetricsError("valence values must be finite (no NaN or inf)")
    return float(np.mean((a - b) ** 2))


def mer2023_combined(
    f1_weighted: float, valence_true: Iterable[float], valence_pred: Iterable[float]
) -> float:
    """MER2023 MER-MULTI score: weighted F1 of the discrete emotions minus 0.25 x valence MSE."""
    return float(f1_weighted) - 0.25 * valence_mse(valence_true, valence_pred)


#: The sentiment rules: what a prediction that is neither positive nor negative (neutral, or an
#: answer outside the sentiment words) counts as. Golds that are neither are always removed.
SENTIMENT_RULES: dict[str, str] = {
    "published": "a prediction that is not positive counts as negative (AffectGPT's evaluation.py "
    "and MERBench: f1_score(gold > 0, pred > 0) over the golds that are not 0)",
    "strict": "a prediction that is neither positive nor negative counts as wrong: as the side "
    "opposite its gold",
    "neutral-class": "a prediction that is neither positive nor negative is a class of its own: a "
    "miss for its gold's class and a false alarm for none (Emotion-LLaMA-v2's "
    "score_split_sentiment_no_neutral.py)",
}
SentimentRule = Literal["published", "strict", "neutral-class"]
#: The words that are positive and negative when no other sets are given.
POSITIVE_WORDS: frozenset[str] = frozenset({"positive"})
NEGATIVE_WORDS: frozenset[str] = frozenset({"negative"})


def _sentiment_sets(positive: Collection[str], negative: Collection[str]) -> tuple[set[str], set[str]]:
    pos, neg = set(positive), set(negative)
    if not pos or not neg:
        raise MetricsError("positive and negative label sets must both be non-empty")
    if pos & neg:
        raise MetricsError(f"labels are both positive and negative: {sorted(pos & neg)}")
    return pos, neg


def sentiment_side(
    value: Any, positive: Collection[str] = POSITIVE_WORDS, negative: Collection[str] = NEGATIVE_WORDS
) -> str | None:
    """``"positive"``, ``"negative"`` or ``None`` (neutral or unknown) for one gold or prediction.

    A number is a sentiment score: above 0 positive, below 0 negative, 0 neutral (MOSI/MOSEI -3..3,
    SIMS -1..1). A label is positive when in ``positive``, negative when in ``negative``, else
    ``None``. A non-finite number or a boolean is a :class:`MetricsError`.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        raise MetricsError(f"a sentiment is a score or a label, not {value!r}")
    if isinstance(value, int | float):
        if not np.isfinite(value):
            raise MetricsError(f"a sentiment score must be finite, got {value!r}")
        return "positive" if value > 0 else "negative" if value < 0 else None
    if not isinstance(value, Hashable):
        raise MetricsError(f"a sentiment is a score or a label, not {value!r}")
    if value in positive:
        return "positive"
    if value in negative:
        return "negative"
    return None


def sentiment_report(
    y_true: Iterable[Any],
    y_pred: Iterable[Any],
    positive: Collection[str] = POSITIVE_WORDS,
    negative: Collection[str] = NEGATIVE_WORDS,
    *,
    rule: SentimentRule = "published",
) -> dict[str, Any]:
    """Binary sentiment scores (positive vs negative) of scores or labels; see :func:`sentiment_side`.

    Samples whose gold is neither positive nor negative (a score of 0, a neutral label) are removed.
    A prediction that is neither is scored by ``rule`` (:data:`SENTIMENT_RULES`). Returns
    ``weighted_f1`` (over positive and negative, weighted by gold support: scikit-learn's
    ``average="weighted"``), ``accuracy``, ``n`` (samples scored), ``neutral_gold`` (removed),
    ``undecided`` (scored predictions that were neither) and ``rule``.
    """
    if rule not in SENTIMENT_RULES:
        raise MetricsError(f"unknown sentiment rule {rule!r}; choose one of: {', '.join(SENTIMENT_RULES)}")
    t, p = _pair(y_true, y_pred)
    pos, neg = _sentiment_sets(positive, negative)
    gold: list[str] = []
    pred: list[str] = []
    undecided = 0
    for a, b in zip(t, p, strict=True):
        g = sentiment_side(a, pos, neg)
        if g is None:
            continue
        q = sentiment_side(b, pos, neg)
        if q is None:
            undecided += 1
            if rule == "published":
                q = "negative"
            elif rule == "strict":
                q = "negative" if g == "positive" else "positive"
            else:
                q = "other"  # outside the scored labels: counted against neither class
        gold.append(g)
        pred.append(q)
    if not gold:
        raise MetricsError("every gold label is neutral; no sample is left for sentiment F1")
    return {
        "rule": rule,
        "weighted_f1": f1(gold, pred, labels=["positive", "negative"], average="weighted"),
        "accuracy": accuracy(gold, pred),
        "n": len(gold),
        "neutral_gold": len(t) - len(gold),
        "undecided": undecided,
    }


def sentiment_weighted_f1(
    y_true: Iterable[Any],
    y_pred: Iterable[Any],
    positive: Collection[str] = POSITIVE_WORDS,
    negative: Collection[str] = NEGATIVE_WORDS,
    *,
    rule: SentimentRule = "published",
) -> float:
    """Weighted F1 of binary sentiment (positive vs negative) from sentiment scores or labels.

    Golds that are neither positive nor negative are removed. By default (``rule="published"``) a
    prediction that is not positive counts as negative, as AffectGPT and MERBench score MOSI, MOSEI
    and SIMS; ``rule="strict"`` counts a neutral or unknown prediction as the side opposite its
    gold; ``rule="neutral-class"`` as a miss only. See :func:`sentiment_report`.
    """
    return float(sentiment_report(y_true, y_pred, positive, negative, rule=rule)["weighted_f1"])


def classification_report(
    y_true: Iterable[str], y_pred: Iterable[str], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Every metric at once, as plain Python values (JSON-serialisable for string labels)."""
    t, p = _pair(y_true, y_pred)
    labs = _labels(t, p, labels)
    acc = accuracy(t, p)
    return {
        "accuracy": acc,
        "weighted_f1": f1(t, p, labs, "weighted"),
        "macro_f1": f1(t, p, labs, "macro"),
        "uar": uar(t, p, labs),
        "war": acc,
        "per_class": per_class_scores(t, p, labs),
        "confusion": confusion_matrix(t, p, labs).tolist(),
        "labels": list(labs),
        "n": len(t),
    }


# -- speech recognition ------------------------------------------------------------------------
__all__.append("word_error_rate")

# Hyphens, dashes and slashes join words ("cold-hearted", "and/or"): they become spaces so that
# "cold-hearted" and "cold hearted" score alike. Every other punctuation mark is dropped in place
# ("Mr." -> "mr"), except apostrophes, which change the word ("its" vs "it's"); typographic
# apostrophes are folded to ASCII so that the two spellings of "don't" match.
_WER_SEPARATORS = frozenset("-/\u2010\u2011\u2012\u2013\u2014\u2015")
_WER_APOSTROPHES = frozenset("'\u2018\u2019")


def _wer_words(text: str) -> list[str]:
    chars: list[str] = []
    for ch in text.lower():
        if ch in _WER_APOSTROPHES:
            chars.append("'")
        elif ch in _WER_SEPARATORS or ch.isspace():
            chars.append(" ")
        elif ch.isalnum():
            chars.append(ch)
        # anything else is punctuation or a symbol: dropped
    # Quotes written with apostrophes ('hello') are not part of the word.
    return [w for w in (w.strip("'") for w in "".join(chars).split()) if w]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by Levenshtein over words.

    Both texts are lower-cased and stripped of punctuation except apostrophes first (hyphens and
    dashes split words). The result can exceed 1.0 when the hypothesis has many extra words.
    """
    ref = _wer_words(reference)
    if not ref:
        raise MetricsError("reference has no words; word error rate is undefined")
    hyp = _wer_words(hypothesis)
    # One row of the edit-distance table at a time: O(len(hyp)) memory.
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)
