"""The open-vocabulary emotion metric on the real emotion-wheel tables (../shared/data/emotion_wheel)."""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emotion_llama.evaluate.openvocab import (
    WHEEL_NAMES,
    EmotionWheels,
    hit_rate,
    ov_scores,
    split_labels,
)
from helpers import SHARED

WHEEL_DIR = SHARED / "data" / "emotion_wheel"
TABLES = ["format.csv", "synonym.csv", *(f"{name}.csv" for name in WHEEL_NAMES)]

pytestmark = pytest.mark.skipif(
    not all((WHEEL_DIR / name).is_file() for name in TABLES),
    reason=f"emotion-wheel tables not in {WHEEL_DIR}",
)


@pytest.fixture(scope="module")
def wheels() -> EmotionWheels:
    return EmotionWheels.load(WHEEL_DIR)


def _sectors(wheels: EmotionWheels, word: str) -> list[str | None]:
    return [wheels.map_word(word, name) for name in WHEEL_NAMES]


# ---------------------------------------------------------------- string-to-list


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abandoned,abandon,abandonment", ["abandoned", "abandon", "abandonment"]),
        ("uncovered, revealed, unprotected", ["uncovered", "revealed", "unprotected"]),
        ("['a', 'b']", ["a", "b"]),
        ('["happy", "sad"]', ["happy", "sad"]),
        ("[happy]", ["happy"]),
        ("happy,, ,sad,", ["happy", "sad"]),
        ("[]", []),
        ("", []),
        (None, []),
        # A list is taken item by item: no splitting on quotes or commas inside an item.
        (["don't care", " sad "], ["don't care", "sad"]),
        (("happy", ""), ["happy"]),
    ],
)
def test_split_labels(value: object, expected: list[str]) -> None:
    assert split_labels(value) == expected  # type: ignore[arg-type]


def test_only_one_bracket_is_removed_each_side() -> None:
    # "[[a]]" loses one "[" and one "]"; the inner brackets stay part of the word.
    assert split_labels("[[a], b]") == ["[a]", "b"]


# ---------------------------------------------------------------- the three tables


def test_word_form_table(wheels: EmotionWheels) -> None:
    # "delighted" is listed as a form of delight, delighted and delightful: it keeps all three.
    assert wheels.word_forms["delighted"] == {"delight", "delighted", "delightful"}
    assert wheels.word_forms["delights"] == {"delight", "delighted", "delightful"}
    # A name maps to itself; "happy" is also a form of "happiness".
    assert wheels.word_forms["happy"] == {"happy", "happiness"}
    assert "xyzzy" not in wheels.word_forms


def test_synonym_table_merges_runs_and_lowercases(wheels: EmotionWheels) -> None:
    # Run 2 spells it "Care" with synonym "look after"; every run lower-cases to "care".
    assert "care" in wheels.synonyms["care"]
    assert "Care" not in wheels.synonyms
    assert wheels.synonyms["look after"] == {"care"}
    # "delighted" is a synonym of four wheel words across the runs (a union, not the last run).
    assert wheels.synonyms["delighted"] == {"amused", "happy", "joyful", "thrilled"}


def test_wheel_tables_fill_blanks_and_strip_padding(wheels: EmotionWheels) -> None:
    # wheel1: "Insulated" sits under blank level1/level2 cells, so it belongs to "Mad".
    assert wheels.wheels["wheel1"]["insulated"] == "mad"
    assert wheels.wheels["wheel1"]["mad"] == "mad"
    # wheel5 pads every cell with spaces (" Mad , Hurt , Jealous ").
    assert wheels.wheels["wheel5"]["jealous"] == "mad"
    assert wheels.sectors(5) == ("mad", "scared", "sad", "peaceful", "powerful", "joyful")
    assert wheels.sectors("wheel4") == ("joy", "genius", "anger", "sad", "fear", "disgust")
    assert [len(wheels.sectors(name)) for name in WHEEL_NAMES] == [6, 7, 6, 6, 6]
    # wheel2 lists "embarrassed" under Disgusted and again under Sad: the last row wins.
    assert wheels.wheels["wheel2"]["embarrassed"] == "sad"


# ---------------------------------------------------------------- mapping one word


def test_word_mapping_per_wheel(wheels: EmotionWheels) -> None:
    assert _sectors(wheels, "happy") == ["happy", "happy", "joyful", "joy", "powerful"]
    assert _sectors(wheels, "joyful") == ["happy", "happy", "joyful", "joy", "powerful"]
    assert _sectors(wheels, "delighted") == ["happy", "happy", "joyful", "joy", "joyful"]
    assert _sectors(wheels, "worried") == ["scared", "fearful", "scared", "fear", "scared"]
    # Case, surrounding space and word form do not matter.
    assert _sectors(wheels, "  Happiness ") == _sectors(wheels, "happy")


def test_first_candidate_in_sorted_order_wins(wheels: EmotionWheels) -> None:
    # "fear" is also a form of "fearless", whose synonyms (brave, courageous, daring) sort before
    # "fear"/"scared": on wheels 2-5 the first candidate found is a positive sector.
    assert _sectors(wheels, "fear") == ["scared", "happy", "joyful", "genius", "joyful"]
    # wheel5 has "cheerful" under Powerful and it sorts before "joyful": joyful -> powerful there.
    assert wheels.map_word("joyful", 5) == "powerful"


def test_oov_and_unreachable_words_are_dropped(wheels: EmotionWheels) -> None:
    assert _sectors(wheels, "xyzzy") == [None] * 5
    assert _sectors(wheels, "neutral") == [None] * 5
    # "disgust" is in the word-form table but reaches no word of wheel3 or wheel5.
    assert _sectors(wheels, "disgust") == ["disgusted", "disgusted", None, "disgust", None]
    assert wheels.map_words(["happy", "xyzzy", "sad"], "wheel1") == {"happy", "sad"}
    assert wheels.map_words("xyzzy, neutral", 1) == set()
    with pytest.raises(KeyError, match="wheel9"):
        wheels.map_words(["happy"], "wheel9")


# ---------------------------------------------------------------- ov_scores


def test_joyful_delighted_against_happy(wheels: EmotionWheels) -> None:
    # Wheels 1-4: all three words fall in one sector (happy, happy, joyful, joy): a perfect score.
    # Wheel 5: happy -> {powerful}; joyful -> powerful, delighted -> joyful: P = {powerful, joyful}.
    for name, sector in zip(WHEEL_NAMES[:4], ["happy", "happy", "joyful", "joy"], strict=True):
        assert (
            wheels.map_words(["joyful", "delighted"], name) == {sector} == wheels.map_words(["happy"], name)
        )
    assert wheels.map_words(["joyful", "delighted"], "wheel5") == {"powerful", "joyful"}
    assert wheels.map_words(["happy"], "wheel5") == {"powerful"}

    scores = ov_scores([["happy"]], [["joyful", "delighted"]], wheels)
    for name in WHEEL_NAMES[:4]:
        assert scores["per_wheel"][name] == {"fs": 1.0, "precision": 1.0, "recall": 1.0, "n_scored": 1}
    assert scores["per_wheel"]["wheel5"] == {
        "fs": pytest.approx(2 / 3),
        "precision": 0.5,
        "recall": 1.0,
        "n_scored": 1,
    }
    assert scores["precision"] == pytest.approx(0.9)
    assert scores["recall"] == 1.0
    assert scores["fs"] == pytest.approx((4 + 2 / 3) / 5)
    assert scores["n_scored"] == 1 and scores["n_samples"] == 1
    # The same sample written as strings.
    assert ov_scores(["happy"], ["['joyful', 'delighted']"], wheels) == scores


def test_fs_comes_from_averaged_precision_and_recall(wheels: EmotionWheels) -> None:
    # Sample 1: P=1/2, R=1; sample 2: P=1, R=1/2 (happy and sad never share a sector).
    # Mean P = mean R = 3/4, so Fs = 3/4 (the mean of per-sample F would be 2/3).
    scores = ov_scores([["happy"], ["happy", "sad"]], [["happy", "sad"], ["happy"]], wheels)
    for name in WHEEL_NAMES:
        row = scores["per_wheel"][name]
        assert row["precision"] == 0.75 and row["recall"] == 0.75 and row["n_scored"] == 2
        assert row["fs"] == pytest.approx(0.75)


def test_empty_predictions_score_zero(wheels: EmotionWheels) -> None:
    scores = ov_scores([["happy"], ["sad"], ["angry"]], [[], "", "xyzzy"], wheels)
    assert scores["fs"] == scores["precision"] == scores["recall"] == 0.0
    for row in scores["per_wheel"].values():
        assert row == {"fs": 0.0, "precision": 0.0, "recall": 0.0, "n_scored": 3}


def test_oov_words_are_dropped_and_oov_golds_skipped(wheels: EmotionWheels) -> None:
    # "xyzzy" in the prediction is dropped, so precision stays 1 (it would be 1/2 if kept).
    scores = ov_scores([["sad"]], [["sad", "xyzzy"]], wheels)
    assert scores["precision"] == 1.0 and scores["fs"] == 1.0
    # A gold of only OOV words is skipped: the score is that of the other sample alone.
    scores = ov_scores([["xyzzy", "neutral"], ["sad"]], [["happy"], ["sad"]], wheels)
    assert scores["fs"] == 1.0
    assert scores["n_scored"] == 1 and scores["n_samples"] == 2
    assert all(row["n_scored"] == 1 for row in scores["per_wheel"].values())


def test_skipping_is_per_wheel(wheels: EmotionWheels) -> None:
    # "disgust" reaches wheels 1, 2 and 4 only; on wheels 3 and 5 the first sample is skipped.
    scores = ov_scores([["disgust"], ["sad"]], [["happy"], ["sad"]], wheels)
    assert [scores["per_wheel"][name]["n_scored"] for name in WHEEL_NAMES] == [2, 2, 1, 2, 1]
    assert [scores["per_wheel"][name]["precision"] for name in WHEEL_NAMES] == [0.5, 0.5, 1.0, 0.5, 1.0]
    assert scores["n_scored"] == 2


def test_a_wheel_with_nothing_scored_is_nan(wheels: EmotionWheels) -> None:
    scores = ov_scores([["disgust"]], [["disgust"]], wheels)
    assert math.isnan(scores["per_wheel"]["wheel3"]["fs"])
    assert scores["per_wheel"]["wheel3"]["n_scored"] == 0
    assert scores["per_wheel"]["wheel1"]["fs"] == 1.0
    assert math.isnan(scores["fs"])
    empty = ov_scores([], [], wheels)
    assert math.isnan(empty["fs"]) and empty["n_scored"] == 0


def _random_samples(wheels: EmotionWheels, n: int, seed: int) -> tuple[list[list[str]], list[list[str]]]:
    rng = random.Random(seed)
    vocab = [*sorted({word for mapping in wheels.wheels.values() for word in mapping}), "xyzzy", "neutral"]
    golds = [rng.sample(vocab, rng.randint(0, 3)) for _ in range(n)]
    preds = [rng.sample(vocab, rng.randint(0, 5)) for _ in range(n)]
    return golds, preds


def test_scores_average_the_wheels_and_match_a_set_computation(wheels: EmotionWheels) -> None:
    golds, preds = _random_samples(wheels, 300, seed=0)
    scores = ov_scores(golds, preds, wheels)
    for key in ("fs", "precision", "recall"):
        per_wheel = [scores["per_wheel"][name][key] for name in WHEEL_NAMES]
        assert scores[key] == pytest.approx(sum(per_wheel) / 5, abs=1e-15)
    # The bit-mask implementation agrees with a plain set computation over map_words.
    for name in WHEEL_NAMES:
        precisions, recalls = [], []
        for gold, pred in zip(golds, preds, strict=True):
            g, p = wheels.map_words(gold, name), wheels.map_words(pred, name)
            if not g:
                continue
            precisions.append(len(g & p) / len(p) if p else 0.0)
            recalls.append(len(g & p) / len(g) if p else 0.0)
        row = scores["per_wheel"][name]
        assert row["n_scored"] == len(precisions) > 100
        assert row["precision"] == pytest.approx(sum(precisions) / len(precisions), abs=1e-12)
        assert row["recall"] == pytest.approx(sum(recalls) / len(recalls), abs=1e-12)
    assert 0.0 < scores["fs"] < 1.0


def test_tables_built_in_memory_with_more_than_64_sectors() -> None:
    # Three wheels of 40 sectors need 120 bits: the scorer then unpacks each wheel separately.
    words = [f"s{j}" for j in range(40)]
    table = EmotionWheels(
        word_forms={word: frozenset([word]) for word in words},
        synonyms={word: frozenset([word]) for word in words},
        wheels={f"w{i}": {word: word for word in words} for i in range(3)},
    )
    assert table.wheel_bits("w2") == (80, 40)
    scores = ov_scores([["s1", "s39"], ["s5"]], [["s39", "s2"], ["S5 ", "oov"]], table)
    for row in scores["per_wheel"].values():
        assert row == {"fs": 0.75, "precision": 0.75, "recall": 0.75, "n_scored": 2}


def test_wheels_can_be_given_as_a_folder(wheels: EmotionWheels) -> None:
    assert ov_scores([["sad"]], [["sad"]], WHEEL_DIR) == ov_scores([["sad"]], [["sad"]], wheels)


def test_bad_inputs(wheels: EmotionWheels) -> None:
    with pytest.raises(ValueError, match="2 samples"):
        ov_scores([["happy"], ["sad"]], [["happy"]], wheels)
    with pytest.raises(TypeError, match="not a string"):
        ov_scores("happy", ["happy"], wheels)  # type: ignore[arg-type]


# ---------------------------------------------------------------- hit rate


def test_hit_rate_hand_case(wheels: EmotionWheels) -> None:
    gold_labels = ["happy", "sad", "neutral", "worried", "surprise"]
    preds = ["joyful, delighted", "angry", "sad", "['anxious']", ["Surprised"]]
    # happy: hit on every wheel (wheel5: powerful is in {powerful, joyful}); sad vs angry: miss;
    # neutral: skipped (maps nowhere); worried vs anxious: same sector everywhere; surprise: hit
    # on wheels 1-4, skipped on wheel5 where it maps nowhere.
    result = hit_rate(gold_labels, preds, wheels)
    for name in WHEEL_NAMES[:4]:
        assert result["per_wheel"][name] == {"hit_rate": 0.75, "n_scored": 4}
    assert result["per_wheel"]["wheel5"]["n_scored"] == 3
    assert result["per_wheel"]["wheel5"]["hit_rate"] == pytest.approx(2 / 3)
    assert result["hit_rate"] == pytest.approx((4 * 0.75 + 2 / 3) / 5)
    assert result["n_scored"] == 4 and result["n_samples"] == 5


def test_hit_rate_counts_any_overlap_once(wheels: EmotionWheels) -> None:
    # Several predicted words in the gold sector still count one hit; no prediction is a miss.
    result = hit_rate(["sad", "sad"], [["sad", "depressed", "lonely", "happy"], []], wheels)
    assert result["hit_rate"] == 0.5
    assert all(row["hit_rate"] == 0.5 for row in result["per_wheel"].values())


# ---------------------------------------------------------------- loading errors


def test_missing_table_names_the_file(tmp_path: Path) -> None:
    for name in TABLES:
        if name != "wheel3.csv":
            shutil.copy(WHEEL_DIR / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match=r"wheel3\.csv") as error:
        EmotionWheels.load(tmp_path)
    assert "AffectGPT" in str(error.value)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="AffectGPT"):
        EmotionWheels.load(tmp_path / "nowhere")


def test_table_without_its_columns(tmp_path: Path) -> None:
    for name in TABLES:
        shutil.copy(WHEEL_DIR / name, tmp_path / name)
    (tmp_path / "format.csv").write_text("lemma,forms\nhappy,happy\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"format\.csv.*\['name', 'format'\]"):
        EmotionWheels.load(tmp_path)


# ---------------------------------------------------------------- no torch


def test_import_leaves_torch_out() -> None:
    code = (
        "import sys\n"
        "import emotion_llama.evaluate.openvocab\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
