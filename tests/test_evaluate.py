import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotion_llama.data.formats.lists import read_ncev
from emotion_llama.data.samples import DataError
from emotion_llama.encoders.store import AuthorsLayoutStore, ClipFeatures
from emotion_llama.evaluate.judges import parse_score, parse_word_list
from emotion_llama.evaluate.runner import get_benchmark, read_predictions, run_predictions
from emotion_llama.evaluate.scoring import score_records
from emotion_llama.prompts import MER_LABELS, parse_label_robust, parse_last_word


# -- answer parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "last", "robust"),
    [
        ("happy", "happy", "happy"),
        ("...the emotion is happy.", "neutral", "happy"),  # "happy." is not a label: neutral
        ("Happy", "neutral", "happy"),  # the authors compared case-sensitively
        ("not sad but angry", "angry", "angry"),
        ("She is not happy at all, she is sad.", "neutral", "sad"),
        ("Therefore, it is inferred that her emotional state is anger.", "neutral", "angry"),
        ("[INST] x [/INST] worried</s>", "worried", "worried"),
        ("I can't tell", "neutral", None),
    ],
)
def test_answer_parsers(answer, last, robust):
    assert parse_last_word(answer, MER_LABELS) == last
    assert parse_label_robust(answer, MER_LABELS) == robust


def test_judge_reply_parsing():
    assert parse_score("score: 7\nreason: both say happy") == 7
    assert parse_score("I would give it 8.5 out of 10") == 8.5
    assert parse_score("Score = 11") is None  # outside 1..10
    assert parse_score("no number here") is None
    assert parse_word_list("Happy, excited; relieved.") == ["happy", "excited", "relieved"]
    assert parse_word_list("Emotion words: sad and disappointed") == ["sad", "disappointed"]
    assert parse_word_list("none") == []


# -- formats ---------------------------------------------------------------------------------------
def test_ncev_reader_and_errors(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("sample_00000047 22 surprise -0.61232674\nsample_2 10 happy -10\n")
    clips = read_ncev(p)
    assert [(c.name, c.label, c.valence) for c in clips] == [
        ("sample_00000047", "surprise", -0.61232674),
        ("sample_2", "happy", None),  # -10 is MER2023's placeholder
    ]
    p.write_text("ok 1 happy 0.1\nbroken\n")
    with pytest.raises(DataError, match=r"labels.txt:2: expected"):
        read_ncev(p)


def test_prediction_file_errors_name_the_line(tmp_path):
    p = tmp_path / "predictions.jsonl"
    p.write_text('{"name": "a", "output": "happy", "gold": "happy"}\n{"name": "b", "output": \n')
    with pytest.raises(DataError, match=r"predictions.jsonl:2: malformed prediction line"):
        read_predictions(p)
    p.write_text(
        '{"name": "a", "output": "happy", "gold": "happy"}\n{"name": "b", "output": "sad", "gold": "joy"}\n'
    )
    with pytest.raises(DataError, match=r"predictions.jsonl:2: gold label 'joy' is not one of mer2023"):
        score_records(get_benchmark("mer2023"), read_predictions(p), source=p)


def test_cut_off_last_line_is_repaired(tmp_path):
    p = tmp_path / "predictions.jsonl"
    p.write_text('{"name": "a", "output": "happy"}\n{"name": "b", "outp')
    assert [r["name"] for r in read_predictions(p, repair=True)] == ["a"]
    assert p.read_text() == '{"name": "a", "output": "happy"}\n'


def _label_folder(root: Path, n: int) -> list[str]:
    """A MER2023-style folder with only labels.txt and subtitles.csv: enough for the runner with a
    predict function that opens no features."""
    root.mkdir(parents=True)
    names = [f"sample_{i:08d}" for i in range(n)]
    labels = "".join(f"{name} {30 + i} {MER_LABELS[i % 6]} 0.25\n" for i, name in enumerate(names))
    (root / "labels.txt").write_text(labels)
    subs = "".join(f'{name},"sentence {i}, with a comma"\n' for i, name in enumerate(names))
    (root / "subtitles.csv").write_text("name,sentence\n" + subs)
    return names


def _cheap_predict(clips, data):
    # Non-ASCII text, so some cuts fall inside a UTF-8 character.
    return [f"{c.subtitle} — 她感到 {c.label}" for c in clips]


def test_resume_and_score_survive_a_kill_at_every_byte_of_the_last_line(tmp_path, caplog):
    bench = get_benchmark("mer2023")
    data = tmp_path / "mer"
    names = _label_folder(data, 5)
    run_predictions(bench, data, tmp_path / "whole", _cheap_predict, batch_size=2, progress=False)
    whole = (tmp_path / "whole" / "predictions.jsonl").read_bytes()
    assert whole.endswith(b"\n") and whole.count(b"\n") == 5
    last_start = whole.rfind(b"\n", 0, len(whole) - 1) + 1
    summaries = {}
    for cut in range(last_start, len(whole) + 1):
        out = tmp_path / f"cut{cut}"
        out.mkdir()
        pred = out / "predictions.jsonl"
        pred.write_bytes(whole[:cut])  # a kill after `cut` bytes
        torn = last_start < cut < len(whole) - 1  # the record itself is incomplete
        caplog.clear()
        # score right after the kill: a cut-off last line is left out (with a warning), not an error
        before = read_predictions(pred)
        assert [r["name"] for r in before] == names[: 4 if cut < len(whole) - 1 else 5], cut
        if torn:
            assert f"{pred}:5: left out a cut-off last line" in caplog.text, cut
        # resume, then score
        summary = run_predictions(bench, data, out, _cheap_predict, batch_size=2, progress=False)
        assert summary.predicted == (1 if cut < len(whole) - 1 else 0), cut
        final = read_predictions(pred)
        assert sorted(r["name"] for r in final) == sorted(names), cut  # each clip exactly once
        assert pred.read_bytes() == whole, cut  # every line whole and parsing
        assert all(json.loads(line)["name"] for line in whole.splitlines())
        assert score_records(bench, final, source=pred)["n"] == 5
        summaries[cut] = summary
    # the resume said what it mended: a newline added, or the cut-off record dropped
    notes = {cut: s.notes for cut, s in summaries.items()}
    assert [cut for cut, n in notes.items() if n] == list(range(last_start + 1, len(whole)))
    assert all(
        f"{tmp_path}/cut{cut}/predictions.jsonl:5: dropped" in notes[cut][0]
        for cut in notes
        if last_start < cut < len(whole) - 1
    )
    assert "had no newline" in notes[len(whole) - 1][0]


def test_predictions_are_appended_one_whole_line_per_write(tmp_path, monkeypatch):
    from emotion_llama.evaluate import runner

    written: list[bytes] = []
    real_write = os.write

    def spy(fd, data):
        written.append(bytes(data))
        return real_write(fd, data)

    records = [{"name": "a", "output": "x" * 100_000}, {"name": "b", "output": "happy"}]
    monkeypatch.setattr(runner.os, "write", spy)
    runner._append_jsonl(tmp_path / "p.jsonl", records)
    monkeypatch.undo()
    assert written == [(json.dumps(r) + "\n").encode() for r in records]


def test_score_cli_leaves_out_a_cut_off_last_line_but_refuses_a_bad_middle_one(tmp_path):
    p = tmp_path / "p.jsonl"
    good = '{"name": "a", "output": "happy", "gold": "happy"}\n'
    p.write_text(good + '{"name": "b", "output": "sa')
    cmd = [sys.executable, "-m", "emotion_llama.cli", "score", str(p), "--benchmark", "mer2023"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{p}:2: left out a cut-off last line" in r.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["n"] == 1
    p.write_text(good + '{"name": "b", "output": "sad"}{"name": "c", "output": "sad"}\n' + good)
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "p.jsonl:2: malformed prediction line" in r.stderr


def test_classification_scores_and_dfew_folds():
    recs = [
        {"name": "1", "gold": "happy", "output": "happy", "fold": "fold1"},
        {"name": "2", "gold": "sad", "output": "The person is sad.", "fold": "fold1"},
        {"name": "3", "gold": "angry", "output": "angry", "fold": "fold2"},
        {"name": "4", "gold": "fear", "output": "surprise", "fold": "fold2"},
    ]
    m = score_records(get_benchmark("dfew"), recs)
    # last word: happy, neutral("sad." is not a label), angry, surprise -> 2/4 right
    assert m["last_word"]["accuracy"] == 0.5
    assert m["robust"]["accuracy"] == 0.75
    assert m["folds"]["fold1"] == {"uar": 0.5, "war": 0.5, "n": 2}  # happy right, sad wrong
    assert m["folds"]["fold2"]["war"] == 0.5
    assert m["mean_over_folds"]["war"] == 0.5
    assert m["unparsed_last_word"] == 1


# -- the runner on a tiny model and a synthetic benchmark folder ----------------------------------------
def make_benchmark(root: Path, config, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    f = config.features
    store = AuthorsLayoutStore(root)
    (root / "first_frames").mkdir(parents=True)
    names, lines, subs = [], [], ["name,sentence"]
    for i in range(n):
        name = f"sample_{i:05d}"
        label = MER_LABELS[i % 6]
        names.append(name)
        lines.append(f"{name} {10 + i} {label} {rng.uniform(-1, 1):.4f}")
        subs.append(f'{name},"line number {i}, said with feeling"')
        store.write(
            name,
            ClipFeatures(
                *(rng.normal(size=d).astype(np.float32) for d in (f.local_dim, f.temporal_dim, f.audio_dim))
            ),
        )
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(
            root / "first_frames" / f"{name}.png"
        )
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    (root / "subtitles.csv").write_text("\n".join(subs) + "\n")
    return names


@pytest.fixture()
def tiny_ckpt(tmp_path, tiny_config):
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained

    return save_pretrained(build_model(tiny_config), tmp_path / "ckpt")


def test_runner_writes_reports_and_skips_broken_clips(tmp_path, tiny_config, tiny_ckpt):
    from emotion_llama.evaluate.report import write_reports
    from emotion_llama.evaluate.runner import model_predict_fn

    data = tmp_path / "mer"
    names = make_benchmark(data, tiny_config, 7)
    (data / "HL-UTT" / f"{names[3]}.npy").unlink()  # one clip lacks its audio feature
    bench = get_benchmark("mer2023")
    predict = model_predict_fn(tiny_ckpt, bench, max_new_tokens=4)
    out = tmp_path / "out"
    summary = run_predictions(bench, data, out, predict, batch_size=3, progress=False)
    assert summary.predicted == 6 and len(summary.skipped) == 1
    assert summary.skipped[0]["name"] == names[3] and "HL-UTT" in summary.skipped[0]["reason"]
    recs = read_predictions(out / "predictions.jsonl")
    assert sorted(r["name"] for r in recs) == sorted(set(names) - {names[3]})
    assert all(r["gold"] in MER_LABELS and isinstance(r["output"], str) for r in recs)
    files = write_reports(score_records(bench, recs), out, model="tiny")
    assert {f.name for f in files} == {"metrics.json", "report.md", "confusion.png"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 6 and len(metrics["last_word"]["confusion"]) == 6
    assert "| gold \\ pred |" in (out / "report.md").read_text()
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_label_scoring_mode_answers_with_a_benchmark_label(tmp_path, tiny_config, tiny_ckpt):
    from emotion_llama.errors import EmotionLlamaError
    from emotion_llama.evaluate.runner import model_predict_fn

    data = tmp_path / "mer"
    make_benchmark(data, tiny_config, 5)
    bench = get_benchmark("mer2023")
    predict = model_predict_fn(tiny_ckpt, bench, label_mode="score")
    out = tmp_path / "out"
    summary = run_predictions(bench, data, out, predict, batch_size=2, progress=False)
    recs = read_predictions(out / "predictions.jsonl")
    assert summary.predicted == 5 and "label scoring" in predict.model_name
    # random weights answer anything when generating; scoring always names one of the 6 labels
    assert all(r["output"] in MER_LABELS for r in recs)
    with pytest.raises(EmotionLlamaError, match="needs a classification benchmark"):
        model_predict_fn(tiny_ckpt, get_benchmark("emer"), label_mode="score")


def test_evaluate_cli_killed_and_rerun_does_not_repeat_work(tmp_path, tiny_config, tiny_ckpt):
    data = tmp_path / "mer"
    names = make_benchmark(data, tiny_config, 60)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "emotion_llama.cli",
        "evaluate",
        "--benchmark",
        "mer2023",
        "--model",
        str(tiny_ckpt),
        "--data",
        str(data),
        "--out",
        str(out),
        "--batch-size",
        "1",
        "--max-new-tokens",
        "24",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    pred = out / "predictions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not pred.exists() or pred.read_text().count("\n") < 5):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = read_predictions(pred, repair=True)
    assert 5 <= len(first) < 60, "the kill should land halfway"
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(first)} already done, {60 - len(first)} predicted now" in rerun.stdout.replace("\n", " ")
    final = read_predictions(pred)
    assert sorted(r["name"] for r in final) == sorted(names)  # each clip once
    assert [r["output"] for r in final[: len(first)]] == [r["output"] for r in first]
    for f in ("metrics.json", "report.md", "confusion.png"):
        assert (out / f).is_file()
    # score re-computes the same metrics from the file alone
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "emotion_llama.cli",
            "score",
            str(pred),
            "--benchmark",
            "mer2023",
            "--out",
            str(tmp_path / "rescored"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert again.returncode == 0, again.stderr
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((tmp_path / "rescored" / "metrics.json").read_text())
    assert a["last_word"] == b["last_word"]


def test_score_cli_errors(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"name": "a", "output": "happy", "gold": "happy"}\nnot json\n')
    r = subprocess.run(
        [sys.executable, "-m", "emotion_llama.cli", "score", str(p), "--benchmark", "mer2023"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "p.jsonl:2: malformed prediction line" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_judged_benchmarks_with_the_offline_judge(tmp_path):
    from helpers import SHARED

    if not (SHARED / "data" / "emotion_wheel" / "wheel1.csv").is_file():
        pytest.skip(f"emotion-wheel tables not in {SHARED / 'data' / 'emotion_wheel'}")
    recs = [
        {
            "name": "a",
            "output": "She smiles widely and her voice is bright, so she is happy.",
            "reference": "The woman laughs and speaks cheerfully; she is happy.",
        },
        {
            "name": "b",
            "output": "He shouts and frowns; he is angry.",
            "reference": "The man raises his voice and frowns: anger.",
        },
    ]
    emer = tmp_path / "emer.jsonl"
    emer.write_text("".join(json.dumps(r) + "\n" for r in recs))
    ov = tmp_path / "ov.jsonl"
    ov.write_text(
        "".join(
            json.dumps({**r, "reference": ["happy"] if r["name"] == "a" else ["angry"]}) + "\n" for r in recs
        )
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "emotion_llama.cli", "score"]
    r = subprocess.run(
        [*cli, str(emer), "--benchmark", "emer", "--judge", "offline"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["judge"].startswith("hf:") and set(m["clue_replies"]) == {"a", "b"}
    assert m["clue_overlap"] is None or 1 <= m["clue_overlap"] <= 10
    assert "judge: `hf:" in (tmp_path / "report.md").read_text()
    r = subprocess.run(
        [*cli, str(emer), "--benchmark", "emer", "--judge", "offline"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "judge cache: 4 hits, 0 new answers" in r.stdout  # a rerun costs nothing
    out = tmp_path / "ov"
    r = subprocess.run(
        [
            *cli,
            str(ov),
            "--benchmark",
            "ov",
            "--judge",
            "offline",
            "--wheels",
            str(SHARED / "data" / "emotion_wheel"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["fs"] <= 1 and set(m["per_wheel"]) == {f"wheel{i}" for i in range(1, 6)}
    assert set(m["extracted"]) == {"a", "b"}
    r = subprocess.run(
        [*cli, str(ov), "--benchmark", "ov", "--judge", "offline"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 2 and "--wheels DIR" in r.stderr


# -- issue 15: published scoring rules in score_records and the CLI ----------------------------------
def test_a_gold_list_string_is_split_as_affectgpt_splits_it():
    recs = [
        {"name": "1", "gold": "['happy']", "output": "happy"},
        {"name": "2", "gold": ["sad"], "output": "happy"},
    ]
    m = score_records(get_benchmark("mer2023"), recs)
    assert m["last_word"]["accuracy"] == 0.5 and m["last_word"]["per_class"]["sad"]["support"] == 1
    with pytest.raises(DataError, match=r"gold label \"\['happy', 'sad'\]\" is not one of mer2023"):
        score_records(get_benchmark("mer2023"), [{"name": "3", "gold": "['happy', 'sad']", "output": "x"}])


def test_emer_skips_empty_references_and_counts_them():
    from test_annotate_clues import ScriptedLLM

    class Judge(ScriptedLLM):
        name = "scripted-emer-judge"

        @staticmethod
        def _answer(prompt: str) -> str:
            return "score: 7\nreason: both say happy" if "Reference: The" in prompt else "score: 2"

    judge = Judge()
    recs = [
        {"name": "a", "output": "She is happy.", "reference": "The woman laughs; she is happy."},
        {"name": "b", "output": "He is sad.", "reference": ""},
    ]
    m = score_records(get_benchmark("emer"), recs, judge=judge)
    assert m["n"] == 2 and m["n_empty_reference"] == 1
    assert m["clue_overlap"] == 7 and m["label_overlap"] == 7 and set(m["clue_replies"]) == {"a"}
    assert [len(convs) for convs, _ in judge.calls] == [1, 1]  # the empty one is never sent
    with pytest.raises(DataError, match="no prediction has a 'reference'"):
        score_records(get_benchmark("emer"), [recs[1]], judge=judge)


def test_new_benchmarks_read_label_folders_and_refuse_missing_inputs_before_the_model(tmp_path):
    for name, scoring in (("meld", "hit-rate"), ("iemocap", "hit-rate"), ("mosi", "sentiment")):
        spec = get_benchmark(name)
        assert spec.kind == "classification" and spec.scoring == scoring
    assert get_benchmark("sims").labels == ("positive", "negative", "neutral")
    data = tmp_path / "mosi"
    data.mkdir()
    (data / "labels.txt").write_text("v1_1 10 positive 1.6\nv1_2 10 negative -0.8\nv1_3 10 neutral 0\n")
    run_predictions(get_benchmark("mosi"), data, tmp_path / "out", _answer_sentiment, progress=False)
    recs = read_predictions(tmp_path / "out" / "predictions.jsonl")
    assert [r["valence"] for r in recs] == [1.6, -0.8, 0.0]
    m = score_records(get_benchmark("mosi"), recs)
    # the float golds: v1_3 (0) removed; "positive" for v1_1, "neutral" for v1_2 (-> negative): 1.0
    assert m["exact"]["weighted_f1"] == 1.0 and m["exact"]["neutral_gold"] == 1
    cmd = [
        sys.executable,
        "-m",
        "emotion_llama.cli",
        "evaluate",
        "-b",
        "meld",
        "--model",
        str(tmp_path / "none"),
    ]
    r = subprocess.run(
        [*cmd, "--data", str(data), "--out", str(tmp_path / "o")], capture_output=True, text=True
    )
    assert r.returncode == 2 and "--wheels DIR" in r.stderr  # said before looking for the model


def _answer_sentiment(clips, data):
    return ["positive" if c.label == "positive" else "neutral" for c in clips]


@pytest.mark.slow
@pytest.mark.parametrize("labels", ["score", "generate"])
def test_evaluate_compile_gives_the_same_predictions(tmp_path, tiny_config, tiny_ckpt, labels):
    """evaluate --compile: label scoring through torch.compile (inductor on the CPU too), or
    generation with a static KV cache: the same outputs as the eager run, the report says so."""
    from typer.testing import CliRunner

    from emotion_llama.cli import app

    data = tmp_path / "mer"
    make_benchmark(data, tiny_config, 5)
    base = ["evaluate", "-b", "mer2023", "-m", str(tiny_ckpt), "-d", str(data), "--batch-size", "2",
            "--labels", labels, "--max-new-tokens", "6"]  # fmt: skip
    runner = CliRunner()
    outs = []
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        res = runner.invoke(app, [*base, "-o", str(tmp_path / name), *extra])
        assert res.exit_code == 0, res.output
        outs.append({r["name"]: r["output"] for r in read_predictions(tmp_path / name / "predictions.jsonl")})
    assert outs[0] == outs[1] and len(outs[0]) == 5
    assert "(compiled)" in (tmp_path / "compiled" / "report.md").read_text()
    assert "(compiled)" not in (tmp_path / "eager" / "report.md").read_text()
