"""Filters of the MERR fine set (SPEC 6 step 9): contradictory records, near-duplicate texts and the
class balance that decides which labels are over-represented. Pure functions, no torch."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from emotion_llama.annotate.clues import AU_LABEL_RULES, LABEL_MIN_SHARE, candidate_pair
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.prompts import LABELS, parse_label_robust


def _candidate_pairs(candidate_labels: Sequence[Any]) -> list[tuple[str, float]]:
    """``(label, share)`` pairs; a bare label name counts as fully supported (share 1.0)."""
    pairs = [candidate_pair(item) for item in candidate_labels]
    return [(label, 1.0 if share is None else share) for label, share in pairs]


def check_consistency(
    label: str,
    candidate_labels: Sequence[Any],
    reasoning: str | None,
    labels: Sequence[str] = LABELS,
    *,
    clear_share: float = LABEL_MIN_SHARE,
) -> str | None:
    """Why a record contradicts itself, or ``None`` when it does not. Checks, first hit wins:

    1. ``label`` is not in ``labels``: the record cannot be used with this label set.
    2. ``reasoning`` is given but blank: an erroneous generation.
    3. Reasoning rule: ``parse_label_robust(reasoning, labels)`` names a label other than ``label``.
       The parser skips negated mentions ("not happy") and takes the last mention, where a
       reasoning states its conclusion; a reasoning that names no label passes.
    4. AU rule (SPEC 6 step 4, "clips whose pseudo-label disagrees with their AUs are dropped"):
       ``label`` has an AU rule in :data:`AU_LABEL_RULES`, is not among ``candidate_labels``, and
       some other candidate that is in ``labels`` has a share ``>= clear_share`` (by default 0.5,
       the candidate rule's own bar, i.e. any candidate; raise it, e.g. to 0.75, to drop only clips
       whose competing AU evidence is strong). Labels without an AU rule (``neutral``, ``doubt``)
       are exempt: no AU pattern can speak against them. Without candidates there is no AU
       evidence and nothing to contradict. Candidates outside ``labels`` (``disgust`` with the
       MERR set) do not count: the annotator could not have chosen them.

    ``candidate_labels`` is :func:`~emotion_llama.annotate.clues.candidate_labels`' output
    (``(label, share)`` pairs; JSON lists and ``{"label", "share"}`` dicts accepted) or bare label
    names, which count as share 1.
    ``reasoning`` ``None`` skips checks 2 and 3 (coarse records have no reasoning).
    """
    label_set = tuple(labels)
    if label not in label_set:
        return f"label {label!r} is not in the label set ({', '.join(label_set)})"
    if reasoning is not None:
        if not reasoning.strip():
            return "reasoning is empty"
        concluded = parse_label_robust(reasoning, label_set)
        if concluded is not None and concluded != label:
            return f"reasoning concludes {concluded!r} but the label is {label!r}"
    if label not in AU_LABEL_RULES:
        return None
    pairs = _candidate_pairs(candidate_labels)
    if any(name == label for name, _ in pairs):
        return None
    others = [(share, name) for name, share in pairs if name in label_set and share >= clear_share]
    if others:
        share, name = max(others, key=lambda sn: (sn[0], -label_set.index(sn[1])))
        return (
            f"facial action units point to {name!r} ({round(100 * share)}% of its AUs) and the label "
            f"{label!r} is not among the AU candidates"
        )
    return None


# -- near duplicates --------------------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)?")


def shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    """Word ``n``-grams of the lower-cased text (punctuation ignored). A text shorter than ``n`` words
    is one shingle of its words, so short texts still compare; an empty text has none."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return frozenset({tuple(words)}) if words else frozenset()
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def near_duplicates(texts: Sequence[str], threshold: float = 0.9) -> list[int | None]:
    """For each text, the index of the earliest earlier text whose word 3-gram shingles have a Jaccard
    similarity ``>= threshold`` with its own, else ``None``. Keeping the ``None`` items keeps one
    text of every group. Texts without words are never marked (an empty reasoning is
    :func:`check_consistency`'s business).

    Cost: an inverted index from shingle to earlier texts counts the shared shingles of each pair
    that has any; texts with stock phrases share some with nearly every other, so this is O(n^2)
    in the worst case: fine up to a few thousand texts (MERR fine has 4,487), too slow for
    hundreds of thousands (use MinHash/LSH there).
    """
    if not 0.0 < threshold <= 1.0:
        raise EmotionLlamaError(f"near_duplicates: threshold {threshold} must be in (0, 1]")
    index: defaultdict[tuple[str, ...], list[int]] = defaultdict(list)
    sizes: list[int] = []
    out: list[int | None] = []
    for i, text in enumerate(texts):
        own = shingles(text)
        sizes.append(len(own))
        shared: Counter[int] = Counter()
        for s in own:
            shared.update(index[s])
        match: int | None = None
        for j in sorted(shared):
            inter = shared[j]
            if inter / (len(own) + sizes[j] - inter) >= threshold:
                match = j
                break
        out.append(match)
        for s in own:
            index[s].append(i)
    return out


# -- class balance ----------------------------------------------------------------------------------
def class_balance(labels: Sequence[str | None]) -> dict[str, Any]:
    """Counts and shares per label, most frequent first (ties by name).

    Returns ``{"total", "labelled", "unlabelled", "counts", "shares", "imbalance_ratio"}``: shares
    are over the labelled items; the imbalance ratio is the largest count over the smallest among
    the labels that occur (1.0 when one label occurs, ``None`` when none does). Labels that never
    occur are not in the dict, so they cannot make the ratio infinite.
    """
    counts = Counter(lab for lab in labels if lab is not None)
    labelled = sum(counts.values())
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "total": len(labels),
        "labelled": labelled,
        "unlabelled": len(labels) - labelled,
        "counts": ordered,
        "shares": {k: v / labelled for k, v in ordered.items()},
        "imbalance_ratio": (max(counts.values()) / min(counts.values())) if counts else None,
    }
