import json
import subprocess
import sys

import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.metrics import (
    SENTIMENT_RULES,
    MetricsError,
    accuracy,
    classification_report,
    confusion_matrix,
    f1,
    mer2023_combined,
    per_class_scores,
    sentiment_report,
    sentiment_side,
    sentiment_weighted_f1,
    uar,
    valence_mse,
    war,
)

ALPHABET = ["angry", "doubt", "fear", "happy", "neutral", "sad", "surprise", "worried"]
EXTRA = ["contempt", "zzz-unused"]  # never drawn into y_true / y_pred


@st.composite
def cases(draw):
    """(y_true, y_pred, labels): labels is None or a shuffled subset, maybe with unseen labels."""
    n = draw(st.integers(1, 40))
    pool = draw(st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=5, unique=True))
    y_true = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.sampled_from(ALPHABET), min_size=n, max_size=n))
    if draw(st.booleans()):
        return y_true, y_pred, None
    # A subset of what occurs, plus maybe labels that never occur; predictions and golds outside the
    # subset exercise the "outside labels" rules. Keep at least one gold label so sklearn accepts it.
    seen = sorted(set(y_true) | set(y_pred))
    chosen = draw(st.lists(st.sampled_from(seen), min_size=1, unique=True))
    chosen += draw(st.lists(st.sampled_from(EXTRA), unique=True))
    if not set(chosen) & set(y_true):
        chosen.append(y_true[0])
    return y_true, y_pred, draw(st.permutations(chosen))


def seeded_cases(count=40, seed=1234):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(1, 200))
        k = int(rng.integers(1, len(ALPHABET) + 1))
        classes = [str(x) for x in rng.choice(ALPHABET, size=k, replace=False)]
        y_true = [str(x) for x in rng.choice(classes, size=n)]
        # mostly-correct predictions with noise from the whole alphabet
        noise = rng.choice(ALPHABET, size=n)
        y_pred = [t if rng.random() < 0.6 else str(z) for t, z in zip(y_true, noise, strict=True)]
        labels = None
        if rng.random() < 0.5:
            labels = [*(str(x) for x in rng.permutation(classes[: max(1, k - 1)])), "contempt"]
        out.append((y_true, y_pred, labels))
    return out


SEEDED = seeded_cases()


def _sk_labels(y_true, y_pred, labels):
    return sorted(set(y_true) | set(y_pred)) if labels is None else labels


def _brute_confusion(y_true, y_pred, labels):
    k = len(labels)
    m = np.zeros((k, k), dtype=int)
    for t, p in zip(y_true, y_pred, strict=True):
        if t in labels and p in labels:
            m[labels.index(t), labels.index(p)] += 1
    return m


def _check_against_sklearn(y_true, y_pred, labels):
    labs = _sk_labels(y_true, y_pred, labels)

    assert accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
    assert war(y_true, y_pred) == accuracy(y_true, y_pred)

    for average in ("weighted", "macro", "micro"):
        want = skm.f1_score(y_true, y_pred, labels=labels, average=average, zero_division=0)
        assert f1(y_true, y_pred, labels=labels, average=average) == pytest.approx(want, abs=1e-12), average

    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labs, zero_division=0)
    got = per_class_scores(y_true, y_pred, labels=labels)
    assert list(got) == list(labs)
    for i, lab in enumerate(labs):
        assert got[lab]["precision"] == pytest.approx(p[i], abs=1e-12)
        assert got[lab]["recall"] == pytest.approx(r[i], abs=1e-12)
        assert got[lab]["f1"] == pytest.approx(f[i], abs=1e-12)
        assert got[lab]["support"] == s[i]

    cm = confusion_matrix(y_true, y_pred, labels=labels)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y_true, y_pred, labels=labs))
    np.testing.assert_array_equal(cm, _brute_confusion(y_true, y_pred, list(labs)))

    # UAR as sklearn would give it when restricted to the labels that occur in y_true.
    present = [lab for lab in labs if lab in y_true]
    want_uar = skm.recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
    assert uar(y_true, y_pred, labels=labels) == pytest.approx(want_uar, abs=1e-12)


@settings(max_examples=60, deadline=None, database=None)
@pytest.mark.filterwarnings("ignore:A single label was found")
@given(cases())
def test_matches_sklearn_hypothesis(case):
    _check_against_sklearn(*case)


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("case", SEEDED, ids=[f"seed{i}" for i in range(len(SEEDED))])
def test_matches_sklearn_seeded(case):
    _check_against_sklearn(*case)


def test_seeded_cases_cover_the_edge_rules():
    # Guard that the seeded set really contains the cases the comparison is meant to exercise.
    outside_pred = any(
        labels is not None and any(p not in labels for p in y_pred) for y_true, y_pred, labels in SEEDED
    )
    absent_label = any(
        labels is not None and any(lab not in y_pred for lab in labels) for _, y_pred, labels in SEEDED
    )
    assert outside_pred and absent_label


def test_predictions_outside_labels_are_not_counted():
    y_true = ["happy", "happy", "sad", "sad"]
    y_pred = ["happy", "angry", "sad", "happy"]
    labels = ["happy", "sad", "fear"]
    cm = confusion_matrix(y_true, y_pred, labels)
    # the ("happy" -> "angry") sample lands nowhere; "fear" never occurs
    assert cm.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert cm.dtype.kind == "i"
    scores = per_class_scores(y_true, y_pred, labels)
    # support still counts the sample whose prediction was outside the labels
    assert scores["happy"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2.0}
    assert scores["fear"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0.0}


def test_default_labels_are_sorted_union():
    cm = confusion_matrix(["b", "a"], ["c", "a"])
    # labels a, b, c: a->a, b->c
    assert cm.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert list(per_class_scores(["b", "a"], ["c", "a"])) == ["a", "b", "c"]


def test_numpy_inputs_give_plain_python_keys():
    scores = per_class_scores(np.array(["x", "y"]), np.array(["x", "x"]))
    assert all(type(k) is str for k in scores)
    assert scores["x"]["precision"] == 0.5


def test_uar_war_hand_computed():
    # angry: 4 samples, 3 right -> recall 3/4
    # happy: 2 samples, 1 right -> recall 1/2
    # sad:   1 sample,  0 right -> recall 0
    # UAR = (0.75 + 0.5 + 0) / 3 = 1.25 / 3 = 0.41666...
    # WAR = (3 + 1 + 0) / 7 = 4/7 = 0.5714...
    y_true = ["angry"] * 4 + ["happy"] * 2 + ["sad"]
    y_pred = ["angry", "angry", "angry", "sad", "happy", "angry", "happy"]
    assert uar(y_true, y_pred) == pytest.approx(1.25 / 3)
    assert war(y_true, y_pred) == pytest.approx(4 / 7)
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 7)


def test_uar_excludes_zero_support_labels():
    # labels include "fear" and "surprise", which never occur as gold: the mean is over angry, happy
    # only. angry 1/2, happy 2/2 -> UAR = (0.5 + 1) / 2 = 0.75 (not 1.5 / 4 = 0.375)
    y_true = ["angry", "angry", "happy", "happy"]
    y_pred = ["angry", "fear", "happy", "happy"]
    assert uar(y_true, y_pred, labels=["angry", "happy", "fear", "surprise"]) == pytest.approx(0.75)
    # Gold labels outside `labels` are not part of the mean either: only happy (2/2) is left.
    assert uar(y_true, y_pred, labels=["happy"]) == pytest.approx(1.0)


def test_mer2023_combined_hand_computed():
    # valence errors: 0.5, -1.0, 0.0, 1.5 -> squares 0.25, 1.0, 0.0, 2.25 -> sum 3.5 -> MSE 0.875
    # combined = 0.8 - 0.25 * 0.875 = 0.8 - 0.21875 = 0.58125
    true = [1.0, -2.0, 0.0, 3.0]
    pred = [0.5, -1.0, 0.0, 1.5]
    assert valence_mse(true, pred) == pytest.approx(0.875)
    assert mer2023_combined(0.8, true, pred) == pytest.approx(0.58125)
    assert mer2023_combined(0.8, true, true) == pytest.approx(0.8)


def test_sentiment_weighted_f1_hand_computed():
    positive = {"happy", "surprise"}
    negative = {"angry", "sad", "worried"}
    y_true = ["happy", "happy", "surprise", "angry", "sad", "sad", "neutral", "neutral"]
    y_pred = ["happy", "sad", "neutral", "angry", "sad", "happy", "happy", "sad"]
    # neutral golds (last two) are dropped. Mapped (gold, pred):
    #   (pos, pos) (pos, neg) (pos, neg <- "neutral" counts as wrong) (neg, neg) (neg, neg) (neg, pos)
    # positive: tp=1, fp=1, fn=2 -> f1 = 2*1 / (2*1 + 1 + 2) = 2/5 = 0.4, support 3
    # negative: tp=2, fp=2, fn=1 -> f1 = 2*2 / (2*2 + 2 + 1) = 4/7,     support 3
    # weighted = (3 * 0.4 + 3 * 4/7) / 6 = (0.4 + 0.571428...) / 2 = 0.4857142...
    want = (0.4 + 4 / 7) / 2
    assert sentiment_weighted_f1(y_true, y_pred, positive, negative) == pytest.approx(want)
    # cross-check with sklearn on the mapped lists
    gold = ["p", "p", "p", "n", "n", "n"]
    pred = ["p", "n", "n", "n", "n", "p"]
    assert want == pytest.approx(skm.f1_score(gold, pred, average="weighted"))


def test_sentiment_neutral_prediction_is_wrong_for_negative_gold_too():
    # the strict rule: gold negative, prediction neutral -> mapped to positive, so nothing is right
    assert sentiment_weighted_f1(["sad"], ["neutral"], {"happy"}, {"sad"}, rule="strict") == 0.0
    assert sentiment_weighted_f1(["sad"], ["sad"], {"happy"}, {"sad"}, rule="strict") == 1.0
    # the published rule: not positive is negative, so the neutral answer is right here
    assert sentiment_weighted_f1(["sad"], ["neutral"], {"happy"}, {"sad"}) == 1.0


# MOSI-style scores (0 is neutral) and sentiment answers; the gold 0s are removed.
SENTIMENT_GOLD = [2.4, -1.2, 0.0, 0.6, -0.4, 1.8, -2.0, 0.0]
SENTIMENT_PRED = ["positive", "neutral", "positive", "negative", "no idea", "neutral", "negative", "negative"]


def test_sentiment_published_rule_is_affectgpt_and_merbench_s():
    # Left after removing the two 0 golds (gold, answer):
    #   (+, positive) (-, neutral) (+, negative) (-, no idea) (+, neutral) (-, negative)
    # published: every answer that is not "positive" is negative -> predictions P N N N N N
    #   positive: tp 1, fp 0, fn 2 -> F1 2/(2+0+2) = 0.5;  negative: tp 3, fp 2, fn 0 -> 6/8 = 0.75
    #   weighted (supports 3 and 3): 0.625; accuracy 4/6
    rep = sentiment_report(SENTIMENT_GOLD, SENTIMENT_PRED)
    assert rep == {
        "rule": "published",
        "weighted_f1": pytest.approx(0.625),
        "accuracy": pytest.approx(4 / 6),
        "n": 6,
        "neutral_gold": 2,
        "undecided": 3,
    }
    assert sentiment_weighted_f1(SENTIMENT_GOLD, SENTIMENT_PRED) == pytest.approx(0.625)
    # AffectGPT's evaluation.py: positive -> 1, negative -> -1, neutral and anything else -> 0, then
    # f1_score(gold > 0, pred > 0, average="weighted") over the golds that are not 0 (MERBench the same)
    gold = np.array(SENTIMENT_GOLD)
    pred = np.array([{"positive": 1, "negative": -1}.get(p, 0) for p in SENTIMENT_PRED])
    keep = gold != 0
    want = skm.f1_score(gold[keep] > 0, pred[keep] > 0, average="weighted")
    assert rep["weighted_f1"] == pytest.approx(want)
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(gold[keep] > 0, pred[keep] > 0))


def test_sentiment_strict_and_neutral_class_rules_by_hand():
    # strict: an undecided answer is the side opposite its gold -> predictions P P N P N N
    #   positive: tp 1, fp 2, fn 2 -> 2/6;  negative: tp 1, fp 2, fn 2 -> 2/6  => 1/3; accuracy 2/6
    strict = sentiment_report(SENTIMENT_GOLD, SENTIMENT_PRED, rule="strict")
    assert strict["weighted_f1"] == pytest.approx(1 / 3) and strict["accuracy"] == pytest.approx(2 / 6)
    # neutral-class: an undecided answer is a class of its own -> P O N O O N
    #   positive: tp 1, fp 0, fn 2 -> 2/4 = 0.5;  negative: tp 1, fp 1, fn 2 -> 2/5 = 0.4
    #   => (0.5 + 0.4) / 2 = 0.45; accuracy 2/6
    own = sentiment_report(SENTIMENT_GOLD, SENTIMENT_PRED, rule="neutral-class")
    assert own["weighted_f1"] == pytest.approx(0.45) and own["accuracy"] == pytest.approx(2 / 6)
    # Emotion-LLaMA-v2's score_split_sentiment_no_neutral.py: neutral golds dropped, then
    # f1_score(answers, responses, average="weighted") on the words as they are
    answers = ["positive" if g > 0 else "negative" for g in SENTIMENT_GOLD if g != 0]
    responses = [p for g, p in zip(SENTIMENT_GOLD, SENTIMENT_PRED, strict=True) if g != 0]
    assert own["weighted_f1"] == pytest.approx(skm.f1_score(answers, responses, average="weighted"))
    assert own["accuracy"] == pytest.approx(skm.accuracy_score(answers, responses))


def test_sentiment_from_scores_and_labels_alike():
    # float golds and regression outputs (MERBench): pred 0.0 is not positive, so negative
    gold = [1.5, -0.2, 0.0, -3.0]
    pred = [0.4, 0.0, 2.0, -1.0]
    assert sentiment_weighted_f1(gold, pred) == pytest.approx(1.0)
    words = ["positive", "negative", "neutral", "negative"]
    assert sentiment_report(words, pred) == sentiment_report(gold, pred)
    assert sentiment_side(np.float32(0.3)) == "positive" and sentiment_side(-1) == "negative"
    assert sentiment_side(0.0) is None and sentiment_side("neutral") is None
    assert sentiment_side("happy", {"happy"}, {"sad"}) == "positive"
    assert set(SENTIMENT_RULES) == {"published", "strict", "neutral-class"}


@pytest.mark.parametrize(
    "call",
    [
        lambda: sentiment_side(True),
        lambda: sentiment_side(float("nan")),
        lambda: sentiment_side(["positive"]),
        lambda: sentiment_report([1.0], [1.0], rule="lenient"),
        lambda: sentiment_report([0.0, 0], ["positive", "negative"]),
    ],
)
def test_sentiment_bad_input(call):
    with pytest.raises(MetricsError):
        call()


def test_classification_report_bundle():
    y_true = ["angry", "angry", "happy", "sad"]
    y_pred = ["angry", "happy", "happy", "happy"]
    labels = ["angry", "happy", "sad"]
    rep = classification_report(y_true, y_pred, labels)
    assert rep["n"] == 4
    assert rep["labels"] == labels
    assert rep["accuracy"] == rep["war"] == pytest.approx(0.5)
    # recalls: angry 1/2, happy 1/1, sad 0/1 -> UAR 0.5
    assert rep["uar"] == pytest.approx(0.5)
    assert rep["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert rep["weighted_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted"))
    assert rep["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert rep["per_class"]["happy"]["precision"] == pytest.approx(1 / 3)
    json.dumps(rep)  # plain Python values only


@pytest.mark.parametrize(
    "call",
    [
        lambda: accuracy(["a"], ["a", "b"]),
        lambda: accuracy([], []),
        lambda: confusion_matrix(["a", "b"], ["a"]),
        lambda: confusion_matrix([], []),
        lambda: per_class_scores(["a"], []),
        lambda: f1(["a", "b"], ["a"]),
        lambda: f1([], []),
        lambda: f1(["a"], ["a"], average="samples"),
        lambda: uar(["a"], ["a", "a"]),
        lambda: uar([], []),
        lambda: uar(["a"], ["a"], labels=["b"]),
        lambda: war([], []),
        lambda: valence_mse([1.0], [1.0, 2.0]),
        lambda: valence_mse([], []),
        lambda: valence_mse([float("nan")], [0.0]),
        lambda: mer2023_combined(0.5, [0.1, 0.2], [0.1]),
        lambda: sentiment_weighted_f1(["happy"], [], {"happy"}, {"sad"}),
        lambda: sentiment_weighted_f1([], [], {"happy"}, {"sad"}),
        lambda: sentiment_weighted_f1(["neutral"], ["happy"], {"happy"}, {"sad"}),
        lambda: sentiment_weighted_f1(["happy"], ["happy"], {"happy"}, {"happy", "sad"}),
        lambda: classification_report(["a"], ["a", "b"], ["a"]),
        lambda: classification_report([], [], ["a"]),
        lambda: confusion_matrix(["a"], ["a"], labels=[]),
        lambda: confusion_matrix(["a"], ["a"], labels=["a", "a"]),
        lambda: accuracy("ab", "ab"),
        lambda: accuracy(np.array([["a"]]), np.array([["a"]])),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError) as info:
        call()
    assert isinstance(info.value, MetricsError)
    assert isinstance(info.value, EmotionLlamaError)
    assert str(info.value)


def test_length_error_message_names_both_lengths():
    with pytest.raises(ValueError, match=r"differ in length: 2 != 3"):
        f1(["a", "b"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


def test_import_does_not_pull_heavy_libraries():
    code = (
        "import sys, json\n"
        "import emotion_llama.metrics\n"
        "print(json.dumps([m for m in ('torch', 'sklearn', 'pandas') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
