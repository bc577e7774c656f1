"""Rescoring the peers' prediction files: AffectGPT's npz and CSV, Emotion-LLaMA-v2's JSONL, the
project's predictions.jsonl and its published schema. The files are written here as the peers'
scripts write them; the expected scores are worked out by hand from the peers' published rules."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn.metrics as skm

from emotion_llama.data.samples import DataError
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.evaluate.openvocab import WHEEL_NAMES, EmotionWheels
from emotion_llama.evaluate.peer_formats import (
    PREDICTION_SCHEMA,
    attach_golds,
    detect_format,
    keep_split,
    read_gold_file,
    read_prediction_file,
)
from emotion_llama.evaluate.runner import get_benchmark
from emotion_llama.evaluate.scoring import score_records
from helpers import SHARED
from test_annotate_clues import ScriptedLLM

ROOT = Path(__file__).resolve().parents[1]
WHEEL_DIR = SHARED / "data" / "emotion_wheel"


@pytest.fixture(scope="module")
def wheels() -> EmotionWheels:
    if not (WHEEL_DIR / "wheel1.csv").is_file():
        pytest.skip(f"emotion-wheel tables not in {WHEEL_DIR}")
    return EmotionWheels.load(WHEEL_DIR)


def _sectors(wheels: EmotionWheels, word: str) -> list[str | None]:
    return [wheels.map_word(word, name) for name in WHEEL_NAMES]


@pytest.fixture(scope="module")
def distinct(wheels: EmotionWheels) -> None:
    """The hand computations below rely on these facts of the tables: happy, sad and angry fall in
    three different sectors on every wheel, joy in happy's, sadness in sad's, anger in angry's,
    and neutral in none."""
    for a, b in (("happy", "sad"), ("happy", "angry"), ("sad", "angry")):
        assert all(x and y and x != y for x, y in zip(_sectors(wheels, a), _sectors(wheels, b), strict=True))
    assert _sectors(wheels, "joy") == _sectors(wheels, "happy")
    assert _sectors(wheels, "sadness") == _sectors(wheels, "sad")
    assert _sectors(wheels, "anger") == _sectors(wheels, "angry")
    assert _sectors(wheels, "neutral") == [None] * 5


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "emotion_llama.cli", "score", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


class WordJudge(ScriptedLLM):
    """Extracts the basic emotion words a description names, comma-separated (the extraction prompt
    ends with ``Description: TEXT``)."""

    name = "scripted-word-judge"

    @staticmethod
    def _answer(prompt: str) -> str:
        text = prompt.rsplit("Description: ", 1)[-1].lower()
        found = [w for w in ("happy", "sad", "angry") if re.search(rf"\b{w}\b", text)]
        return ", ".join(found) or "none"


# -- AffectGPT ----------------------------------------------------------------------------------------
def test_affectgpt_openset_npz_with_gold_csv_open_vocabulary(tmp_path: Path, distinct: None) -> None:
    # AffectGPT's extract_openset_batchcalling: np.savez_compressed(store_npz, filenames=..., fileitems=...)
    npz = tmp_path / "checkpoint_000030-openset.npz"
    names = ["s1", "s2", "s3", "s4"]
    items = ["[joy]", "[sad, angry]", "[happy]", "[]"]
    np.savez_compressed(npz, filenames=names, fileitems=items)
    # MER2025's label CSV: name, openset
    gold = tmp_path / "track2_test.csv"
    gold.write_text('name,openset\ns1,"[happy, sad]"\ns2,[angry]\ns3,\ns4,[sad]\n')
    read = read_prediction_file(npz)
    assert read.format == "affectgpt" and read.problems == []
    assert [r["words"] for r in read.records] == [["joy"], ["sad", "angry"], ["happy"], []]
    golds, problems = read_gold_file(gold)
    assert problems == [] and golds["s3"] == {"reference": []}
    records, warnings = attach_golds(read.records, golds, gold)
    assert warnings == []
    m = score_records(get_benchmark("ov"), records, source=npz, wheels_dir=WHEEL_DIR)  # no judge needed
    # AffectGPT's calculate_openset_overlap_rate, on every wheel: s3's empty gold is skipped;
    #   s1: G {happy, sad}, P {happy}  -> precision 1,   recall 1/2
    #   s2: G {angry},      P {sad, angry} -> precision 1/2, recall 1
    #   s4: G {sad},        P {}       -> 0, 0
    # precision (1 + 1/2 + 0)/3 = 1/2, recall (1/2 + 1 + 0)/3 = 1/2, Fs 1/2 on each wheel and on average
    assert m["n"] == 4 and m["n_empty_reference"] == 1 and m["n_scored"] == 3
    assert m["fs"] == pytest.approx(0.5) and m["precision"] == pytest.approx(0.5) and m["recall"] == 0.5
    assert all(w["n_scored"] == 3 for w in m["per_wheel"].values())
    assert "judge" not in m


def test_affectgpt_name2reason_npz_goes_through_the_judge(tmp_path: Path, distinct: None) -> None:
    # AffectGPT's inference: np.savez_compressed(save_path, name2reason=name2reason), a pickled dict
    npz = tmp_path / "checkpoint_000010_loss_0.5.npz"
    np.savez_compressed(npz, name2reason={"a": "She laughs: she is happy.", "b": "He is sad, not angry."})
    read = read_prediction_file(npz)
    assert [(r["name"], "words" in r) for r in read.records] == [("a", False), ("b", False)]
    records = [{**r, "reference": ["happy"] if r["name"] == "a" else ["angry"]} for r in read.records]
    judge = WordJudge()
    m = score_records(get_benchmark("ov"), records, source=npz, judge=judge, wheels_dir=WHEEL_DIR)
    # the judge reads "happy" and "sad, angry": a: P 1, R 1; b: G {angry} P {sad, angry} -> P 1/2, R 1
    assert m["judge"] == "scripted-word-judge" and m["extracted"] == {"a": ["happy"], "b": ["sad", "angry"]}
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == pytest.approx(1.0)
    assert len(judge.calls) == 1 and len(judge.calls[0][0]) == 2  # one batch


def test_npz_is_read_without_running_pickled_code(tmp_path: Path) -> None:
    npz = tmp_path / "evil.npz"
    np.savez(npz, name2reason=np.array([Path("/etc/passwd")], dtype=object))
    with pytest.raises(
        DataError, match=r"evil\.npz\[name2reason\]: cannot read it \(refused to load pathlib"
    ):
        read_prediction_file(npz)
    np.savez(tmp_path / "other.npz", scores=np.zeros(3))
    with pytest.raises(DataError, match="'filenames' and 'fileitems', or 'name2reason'; this one has scores"):
        read_prediction_file(tmp_path / "other.npz")
    (tmp_path / "not.npz").write_text("hello")
    with pytest.raises(DataError, match=r"not an \.npz archive"):
        read_prediction_file(tmp_path / "not.npz")
    np.savez(tmp_path / "uneven.npz", filenames=["a", "b"], fileitems=["[happy]"])
    with pytest.raises(DataError, match="two lists of one length"):
        read_prediction_file(tmp_path / "uneven.npz")


def test_affectgpt_csv_bad_rows_are_named_and_the_others_kept(tmp_path: Path) -> None:
    # func_write_key_to_csv: pandas, columns name + keys, no index
    csv = tmp_path / "openset.csv"
    csv.write_text(
        "name,openset\n"
        "a,\"['happy', 'relieved']\"\n"
        ",[sad]\n"  # no name
        "b,[angry]\n"
        "a,[sad]\n"  # again
        "c,[sad],extra\n"  # a field more than the header
        "d,\n"  # an empty prediction: kept, it scores 0
    )
    read = read_prediction_file(csv)
    assert [(r["name"], r["words"]) for r in read.records] == [
        ("a", ["happy", "relieved"]),
        ("b", ["angry"]),
        ("d", []),
    ]
    assert read.problems == [
        f"{csv}:3: no clip name ('')",
        f"{csv}:5: 'a' again (first at line 2); kept the first",
        f"{csv}:6: more fields than the header has",
    ]
    (tmp_path / "x.csv").write_text("id,prediction\na,happy\n")
    with pytest.raises(DataError, match="'name' column and an 'openset' and/or 'reason' column"):
        read_prediction_file(tmp_path / "x.csv")


def test_affectgpt_sentiment_npz_with_its_label_npz_via_the_cli(tmp_path: Path) -> None:
    # -sentiment.npz: the judge's answers per clip; the label file: test_corpus name -> {"val": score}
    names = [f"c{i}" for i in range(8)]
    vals = [2.4, -1.2, 0.0, 0.6, -0.4, 1.8, -2.0, 0.0]
    items = [
        "positive",
        "neutral",
        "positive",
        "negative",
        "I am not sure",
        "neutral",
        "negative",
        "negative",
    ]
    pred = tmp_path / "checkpoint_000030-openset-sentiment.npz"
    np.savez_compressed(pred, filenames=names, fileitems=items)
    labels = tmp_path / "CMUMOSI_label.npz"
    corpus = {n: {"val": v} for n, v in zip(names, vals, strict=True)}
    np.savez_compressed(labels, train_corpus={}, test_corpus=corpus)
    out = tmp_path / "published"
    r = cli(pred, "-b", "mosi", "--gold", labels, "-o", out)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    # AffectGPT's calculate_dimension_zeroshot: positive -> 1, negative -> -1, anything else -> 0;
    # golds 0 removed; f1_score(gold > 0, pred > 0, average="weighted"). Left (gold, answer):
    #   (+, positive) (-, neutral) (+, negative) (-, unsure) (+, neutral) (-, negative)
    #   -> predictions P N N N N N: positive F1 2/4, negative F1 6/8 -> 0.625; accuracy 4/6
    assert m["sentiment_rule"] == "published" and m["source_format"] == "affectgpt"
    assert m["exact"]["weighted_f1"] == pytest.approx(0.625)
    assert m["exact"]["accuracy"] == pytest.approx(4 / 6)
    assert m["exact"]["n"] == 6 and m["exact"]["neutral_gold"] == 2 and m["exact"]["undecided"] == 3
    g = np.array(vals)
    p = np.array([{"positive": 1, "negative": -1}.get(x, 0) for x in items])
    assert m["exact"]["weighted_f1"] == pytest.approx(
        skm.f1_score(g[g != 0] > 0, p[g != 0] > 0, average="weighted")
    )
    assert "published" in (out / "report.md").read_text()
    r = cli(pred, "-b", "mosi", "--gold", labels, "-o", tmp_path / "strict", "--sentiment-rule", "strict")
    m = json.loads((tmp_path / "strict" / "metrics.json").read_text())
    # strict: undecided answers are the side opposite their gold -> P P N P N N: 1/3 and 1/3
    assert m["sentiment_rule"] == "strict" and m["exact"]["weighted_f1"] == pytest.approx(1 / 3)
    assert "Sentiment rule `strict`" in (tmp_path / "strict" / "report.md").read_text()
    r = cli(pred, "-b", "mosi", "--gold", labels, "-o", tmp_path / "x", "--sentiment-rule", "lenient")
    assert r.returncode == 2 and "neutral-class" in r.stderr


# -- Emotion-LLaMA-v2 ---------------------------------------------------------------------------------
def test_emotion_llama_v2_sentiment_jsonl_keeps_the_good_lines(tmp_path: Path) -> None:
    p = write_jsonl(
        tmp_path / "cmu_mosi.jsonl",
        [
            {"video_id": "a", "response": "Positive", "answer": "positive", "mode": "test"},
            {"video_id": "b", "response": "neutral", "answer": "negative", "mode": "test"},
            '{"video_id": "broken", "response": ',
            {"video_id": "c", "response": "negative", "answer": "positive", "mode": "test"},
            {"video_id": "d", "response": "positive", "answer": "Neutral", "mode": "test"},
            {
                "video_id": "e",
                "response": "?",
                "new_response": "negative",
                "answer": "negative",
                "mode": "test",
            },
            {"video_id": "f", "response": "positive", "answer": "negative", "mode": "train"},
            {"response": "positive", "answer": "negative", "mode": "test"},
            {"video_id": "a", "response": "negative", "answer": "positive", "mode": "train"},  # other split
        ],
    )
    assert detect_format(p) == "emotion-llama-v2"
    r = cli(p, "-b", "mosi", "--split", "test", "--sentiment-rule", "neutral-class")
    assert r.returncode == 1  # rows were left out; the others are scored and reported
    assert f"{p}:3: not JSON" in r.stderr and f"{p}:8: no 'video_id'" in r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert len(m["rejected"]) == 2 and m["rejected"][0].startswith(f"{p}:3: not JSON (")
    assert m["rejected"][1] == f"{p}:8: no 'video_id' (a non-empty string)"
    assert m["n"] == 5  # f is of the train split
    # score_split_sentiment_no_neutral.py: answers and responses strip().lower()'d, new_response
    # before response, neutral answers dropped, f1_score(answers, responses, average="weighted"):
    #   (positive, positive) (negative, neutral) (positive, negative) (negative, negative)
    #   positive: tp 1, fn 1 -> 2/3; negative: tp 1, fp 1, fn 1 -> 1/2 -> weighted 7/12
    answers = ["positive", "negative", "positive", "negative"]
    responses = ["positive", "neutral", "negative", "negative"]
    assert m["exact"]["weighted_f1"] == pytest.approx(7 / 12)
    assert m["exact"]["weighted_f1"] == pytest.approx(skm.f1_score(answers, responses, average="weighted"))
    assert m["exact"]["accuracy"] == pytest.approx(skm.accuracy_score(answers, responses))
    report = (tmp_path / "report.md").read_text()
    assert "rows left out" in report and f"{p}:8" in report
    r = cli(p, "-b", "mosi", "-o", tmp_path / "all")
    assert "the predictions of 2 splits (test, train) are scored together" in r.stderr
    assert json.loads((tmp_path / "all" / "metrics.json").read_text())["n"] == 7


def test_emotion_llama_v2_words_give_the_hit_rate_without_a_judge(tmp_path: Path, distinct: None) -> None:
    # score_hit_ov.py reads "[" + response + "]" as the predicted words; golds as given
    p = write_jsonl(
        tmp_path / "mer2023.jsonl",
        [
            {"video_id": "a", "response": "happy", "answer": "happy", "mode": "test1"},
            {"video_id": "b", "response": "sad, angry", "answer": "angry", "mode": "test1"},
            {"video_id": "c", "response": "sad", "answer": "happy", "mode": "test1"},
            {"video_id": "d", "response": "neutral", "answer": "neutral", "mode": "test1"},
        ],
    )
    r = cli(p, "-b", "mer2023", "--wheels", WHEEL_DIR)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    # last word: a right, b "angry" right, c wrong, d right -> 3/4
    assert m["last_word"]["accuracy"] == 0.75
    # hit rate: a hit, b hit (angry among sad, angry), c miss, d skipped (neutral is on no wheel) -> 2/3
    assert m["hit_rate"]["hit_rate"] == pytest.approx(2 / 3) and m["hit_rate"]["n_scored"] == 3
    assert "judge" not in m["hit_rate"]


# -- the CLI on the hit-rate benchmarks ---------------------------------------------------------------
def test_meld_hit_rate_takes_any_label_and_list_strings(tmp_path: Path, distinct: None) -> None:
    # MELD's golds in its own words (joy, anger, sadness: outside the benchmark's label words), one
    # written as a list string; an empty gold is skipped and counted
    p = write_jsonl(
        tmp_path / "predictions.jsonl",
        [
            {"name": "a", "output": "She is happy.", "gold": "['joy']", "words": ["happy", "excited"]},
            {"name": "b", "output": "He is sad.", "gold": "anger", "words": ["sad"]},
            {"name": "c", "output": "Calm.", "gold": "neutral", "words": ["happy"]},
            {"name": "d", "output": "...", "gold": "sadness", "words": ["sadness", "angry"]},
            {"name": "e", "output": "...", "gold": "", "words": ["happy"]},
        ],
    )
    r = cli(p, "-b", "meld", "--wheels", WHEEL_DIR)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    # every wheel: a hit (joy ~ happy), b miss, c skipped (neutral maps nowhere), d hit, e empty -> 2/3
    assert m["hit_rate"] == pytest.approx(2 / 3) and m["n_scored"] == 3 and m["n_empty_gold"] == 1
    assert all(w == {"hit_rate": pytest.approx(2 / 3), "n_scored": 3} for w in m["per_wheel"].values())
    assert "1 of 5 predictions skipped: empty gold" in r.stdout
    r = cli(p, "-b", "meld")
    assert r.returncode == 2 and "--wheels DIR" in r.stderr


def test_hit_rate_counts_shared_sectors_as_affectgpt_does(distinct: None) -> None:
    # calculate_openset_onehot_hitrate appends len(set(pred) & set(gt)): a two-word gold whose words
    # are both predicted scores 2 on each wheel (the label benchmarks have one word, so 0 or 1)
    records = [
        {"name": "a", "output": "", "gold": "['happy', 'sad']", "words": ["joy", "sadness"]},
        {"name": "b", "output": "", "gold": "angry", "words": []},
    ]
    m = score_records(get_benchmark("iemocap"), records, wheels_dir=WHEEL_DIR)
    assert m["hit_rate"] == pytest.approx(1.0)  # (2 + 0) / 2


def test_hit_rate_asks_the_judge_only_for_records_without_words(distinct: None) -> None:
    records = [
        {"name": "a", "output": "The man shouts: he is angry.", "gold": "anger"},
        {"name": "b", "output": "no words needed", "gold": "sadness", "words": ["sad"]},
        {"name": "c", "output": "She smiles, happy.", "gold": "sadness"},
    ]
    judge = WordJudge()
    m = score_records(get_benchmark("meld"), records, judge=judge, wheels_dir=WHEEL_DIR)
    sent = [conv[-1]["content"] for conv in judge.calls[0][0]]
    assert len(judge.calls) == 1 and len(sent) == 2 and "no words needed" not in " ".join(sent)
    assert m["judge"] == "scripted-word-judge" and m["extracted"]["a"] == ["angry"]
    assert m["hit_rate"] == pytest.approx(2 / 3)  # a hit, b hit, c miss
    with pytest.raises(EmotionLlamaError, match="needs the answers' emotion words"):
        score_records(get_benchmark("meld"), [{**r, "words": None} for r in records], wheels_dir=WHEEL_DIR)
    with pytest.raises(EmotionLlamaError, match=r"predictions:\?: no emotion words in the record"):
        score_records(get_benchmark("meld"), records, wheels_dir=WHEEL_DIR)  # b has words, a has none
    # a label benchmark scores without the hit rate then, and says why
    labelled = [{**r, "gold": g} for r, g in zip(records, ("angry", "sad", "sad"), strict=True)]
    m = score_records(get_benchmark("mer2023"), labelled, wheels_dir=WHEEL_DIR)
    assert "hit_rate" not in m and m["warnings"] == [
        "hit rate left out: 2 of 3 records have no emotion words ('words') and there is no --judge to "
        "extract them"
    ]


# -- the project's predictions.jsonl ----------------------------------------------------------------
def test_mer2023_combined_score_in_the_cli(tmp_path: Path) -> None:
    gold = ["happy", "sad", "angry", "neutral", "worried", "happy"]
    out = ["happy", "sad", "sad", "neutral", "worried", "surprise"]
    val = [0.8, -0.6, -0.4, 0.0, -0.2, 0.5]
    pred_val = [0.6, -0.5, 0.1, 0.2, -0.2, 0.9]
    p = write_jsonl(
        tmp_path / "predictions.jsonl",
        [
            {"name": f"s{i}", "output": o, "gold": g, "valence": v, "pred_valence": pv}
            for i, (g, o, v, pv) in enumerate(zip(gold, out, val, pred_val, strict=True))
        ],
    )
    r = cli(p, "-b", "mer2023")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    # squared errors .04 .01 .25 .04 0 .16 -> MSE 0.5/6; MERBench: emo_fscore - 0.25 * val_mse
    mse = 0.5 / 6
    assert m["combined"]["valence_mse"] == pytest.approx(mse)
    assert mse == pytest.approx(skm.mean_squared_error(val, pred_val))
    f1 = skm.f1_score(gold, out, average="weighted")
    assert m["combined"]["last_word"] == pytest.approx(f1 - 0.25 * mse)
    assert "combined" in r.stdout and "MER2023 combined score" in (tmp_path / "report.md").read_text()
    # a predicted valence on some records only: no combined score, and a warning saying why
    lines = p.read_text().splitlines()
    p.write_text(
        lines[0] + "\n" + "\n".join(json.dumps({**json.loads(x), "pred_valence": None}) for x in lines[1:])
    )
    r = cli(p, "-b", "mer2023")
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert "combined" not in m and "1 of 6 records" in m["warnings"][0]


def test_sentiment_from_float_golds_in_the_project_format() -> None:
    records = [
        {"name": "a", "output": "The sentiment is positive.", "gold": 1.4},
        {"name": "b", "output": "negative", "gold": -0.6},
        {"name": "c", "output": "positive", "gold": "0.0"},  # a score written as text: neutral
        {"name": "d", "output": "It is not positive at all", "valence": -2.0, "gold": "negative"},
        {"name": "e", "output": "neutral", "gold": "Positive"},
    ]
    m = score_records(get_benchmark("sims"), records)
    # exact: a "the sentiment is positive." is undecided -> negative; robust reads positive.
    #   exact (gold, pred): (+,N) (-,N) (-,N) (+,N): positive F1 0, negative F1 2*2/(2*2+2) = 2/3 -> 1/3
    #   robust: a positive, d "not positive" skipped -> undecided -> negative; e neutral -> negative
    #     (+,P) (-,N) (-,N) (+,N): positive tp1 fn1 -> 2/3; negative tp2 fp1 -> 4/5 -> 11/15
    assert m["exact"]["n"] == 4 and m["exact"]["neutral_gold"] == 1
    assert m["exact"]["weighted_f1"] == pytest.approx(1 / 3)
    assert m["robust"]["weighted_f1"] == pytest.approx(11 / 15)
    with pytest.raises(DataError, match=r"predictions:\?: gold 'happy' is not a sentiment"):
        score_records(get_benchmark("sims"), [{"name": "x", "output": "positive", "gold": "happy"}])


def test_split_selection_and_missing_golds(tmp_path: Path) -> None:
    records = [{"name": "a", "output": "x", "split": "test"}, {"name": "b", "output": "y", "split": "train"}]
    assert [r["name"] for r in keep_split(records, "test", "f")] == ["a"]
    with pytest.raises(DataError, match="no prediction of split 'val' \\(its splits: test, train\\)"):
        keep_split(records, "val", "f")
    kept, warnings = attach_golds(records, {"a": {"gold": "happy"}, "z": {"gold": "sad"}}, "g.csv")
    assert kept == [{"name": "a", "output": "x", "split": "test", "gold": "happy"}]
    assert warnings == [
        "1 prediction(s) have no gold in g.csv and are left out: b",
        "1 clip(s) of g.csv have no prediction (not scored): z",
    ]
    # Emotion-LLaMA-v2's hitrate_gt files: np.savez(path, **name2gt), one label per clip
    np.savez(tmp_path / "gt_meld_emotion_test.npz", dia0_utt0="joy", dia0_utt1="neutral")
    golds, problems = read_gold_file(tmp_path / "gt_meld_emotion_test.npz")
    assert golds == {"dia0_utt0": {"gold": "joy"}, "dia0_utt1": {"gold": "neutral"}} and problems == []
    (tmp_path / "g.csv").write_text("name,val\na,0.5\nb,much\n")
    golds, problems = read_gold_file(tmp_path / "g.csv")
    assert golds == {"a": {"valence": 0.5}} and problems == [
        f"{tmp_path / 'g.csv'}:3: val 'much' is not a finite number"
    ]


def test_format_detection(tmp_path: Path) -> None:
    assert detect_format(write_jsonl(tmp_path / "p.jsonl", [{"name": "a", "output": "x"}])) == "project"
    assert (
        detect_format(tmp_path / "x.npz") == "affectgpt" and detect_format(tmp_path / "x.csv") == "affectgpt"
    )
    with pytest.raises(DataError, match="cannot tell its format"):
        detect_format(write_jsonl(tmp_path / "q.jsonl", [{"id": "a"}]))
    with pytest.raises(DataError, match="unknown prediction format 'merbench'"):
        read_prediction_file(tmp_path / "p.jsonl", "merbench")
    # a project file read as Emotion-LLaMA-v2's: every line named, none scored
    got = read_prediction_file(tmp_path / "p.jsonl", "emotion-llama-v2")
    assert got.records == [] and got.problems == [
        f"{tmp_path / 'p.jsonl'}:1: no 'video_id' (a non-empty string)"
    ]


def test_published_schema_is_the_code_s_and_fits_the_runner_s_records(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = (ROOT / "docs" / "predictions.md").read_text(encoding="utf-8")
    block = re.search(r"```json\n(\{\n  \"\$schema\".*?)\n```", doc, re.S)
    assert block, "docs/predictions.md publishes the schema in a json block"
    assert json.loads(block.group(1)) == PREDICTION_SCHEMA
    validator = jsonschema.Draft202012Validator(PREDICTION_SCHEMA)
    validator.check_schema(PREDICTION_SCHEMA)
    from emotion_llama.evaluate.runner import run_predictions

    # the records evaluate writes, for a label benchmark with valence
    data = tmp_path / "bench"
    data.mkdir()
    (data / "labels.txt").write_text("s1 10 happy 0.5\ns2 12 sad -10\n")
    run_predictions(get_benchmark("mer2023"), data, tmp_path / "out", _answer, progress=False)
    written = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert written and all(not list(validator.iter_errors(r)) for r in written)
    for bad in ({"name": "a"}, {"name": "", "output": "x"}, {"name": "a", "output": "x", "words": "happy"}):
        assert list(validator.iter_errors(bad)), bad


def _answer(clips: list[Any], data: Path) -> list[str]:
    return [f"The person looks {c.label}" for c in clips]
