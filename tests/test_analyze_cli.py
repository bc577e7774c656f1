"""``analyze`` of many clips (JSONL, CSV, a broken clip in its place), its options (label set,
LLM dtype, reasoning length, speech recognition) and the label-set parser."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from emotion_llama.cli import CSV_COLUMNS, _csv_row, app
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.prompts import DFEW_LABELS, LABEL_SETS, LABELS, MER_LABELS, resolve_label_set

runner = CliRunner()


# -- label sets -------------------------------------------------------------------------------------
def test_named_label_sets():
    assert resolve_label_set("mer6") == MER_LABELS and len(MER_LABELS) == 6
    assert resolve_label_set("merr9") == LABELS and len(LABELS) == 9
    assert resolve_label_set("dfew7") == DFEW_LABELS and len(DFEW_LABELS) == 7
    assert resolve_label_set("MER6") == MER_LABELS
    assert set(LABEL_SETS) == {"mer6", "merr9", "dfew7"}


def test_label_set_file(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("# my labels\n\nHappy\n  sad  # the low one\n\nbored\n", encoding="utf-8")
    assert resolve_label_set(str(f)) == ("happy", "sad", "bored")


def test_label_set_file_refuses_a_duplicate_naming_the_line(tmp_path):
    f = tmp_path / "dup.txt"
    f.write_text("happy\n# comment\nsad\nHAPPY\n", encoding="utf-8")
    with pytest.raises(EmotionLlamaError, match=r"dup\.txt:4: label 'happy' repeats the one of line 1"):
        resolve_label_set(str(f))


def test_label_set_missing_or_empty_file(tmp_path):
    with pytest.raises(EmotionLlamaError, match=r"nope\.txt.*mer6, merr9, dfew7.*no such file"):
        resolve_label_set(str(tmp_path / "nope.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(EmotionLlamaError, match=r"empty\.txt: no labels"):
        resolve_label_set(str(empty))


# -- options refused before anything loads ------------------------------------------------------------
def test_analyze_refuses_a_bad_label_set_file_in_one_line(tmp_path):
    f = tmp_path / "dup.txt"
    f.write_text("happy\nhappy\n", encoding="utf-8")
    res = runner.invoke(app, ["analyze", str(tmp_path / "a.mp4"), "--label-set", str(f)])
    assert res.exit_code == 2
    assert "dup.txt:2" in res.stderr and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1


def test_analyze_refuses_a_bad_dtype_and_a_zero_length(tmp_path):
    res = runner.invoke(app, ["analyze", str(tmp_path / "a.mp4"), "--llm-dtype", "float8"])
    assert res.exit_code == 2 and "unknown LLM dtype 'float8'" in res.stderr
    res = runner.invoke(app, ["analyze", str(tmp_path / "a.mp4"), "--max-new-tokens", "0"])
    assert res.exit_code == 2 and "max-new-tokens" in res.output
    res = runner.invoke(app, ["serve-llm", "--llm-dtype", "int3"])
    assert res.exit_code == 2 and "unknown LLM dtype 'int3'" in res.stderr


def test_analyze_with_nothing_to_analyse(tmp_path):
    res = runner.invoke(app, ["analyze", str(tmp_path)])
    assert res.exit_code == 2 and "no videos to analyse" in res.stderr


def test_csv_row_reads_present_and_absent_keys():
    ok = {
        "name": "a",
        "video": "x/a.mp4",
        "label": "happy",
        "reasoning": "She smiles.",
        "clues": {
            "label_source": "au",
            "subtitle": "hi",
            "conflict": False,
            "reasoning_source": "llm",
            "faithfulness": {"ok": True, "why": []},
            "audio_tone": "bright",
        },
    }
    row = dict(zip(CSV_COLUMNS, _csv_row(ok, model_kind=False), strict=True))
    assert row["label_source"] == "au" and row["faithful"] == "true" and row["conflict"] == "false"
    assert row["reasoning_source"] == "llm" and row["visual_expression"] == "" and row["error"] == ""
    old = {"name": "a", "video": "a.mp4", "label": "sad", "reasoning": None, "clues": {"subtitle": ""}}
    row = dict(zip(CSV_COLUMNS, _csv_row(old, model_kind=True), strict=True))
    assert row["label_source"] == "model" and row["faithful"] == "" and row["conflict"] == ""
    bad = {"name": "b", "video": "b.mp4", "error": "b.mp4: not a readable media file"}
    row = dict(zip(CSV_COLUMNS, _csv_row(bad, model_kind=False), strict=True))
    assert row["error"].startswith("b.mp4") and row["label"] == "" and row["label_source"] == ""


# -- the Predictor's options, without models ----------------------------------------------------------
class FakeLLM:
    """Stands in for the LLM text only: every answer names happiness."""

    name = "fake-llm"

    def __init__(self) -> None:
        self.calls = 0

    def chat_many(self, conversations: Sequence[list[dict[str, str]]], params: Any) -> list[str]:
        self.calls += 1
        return ["Her smile and bright voice show she is happy." for _ in conversations]


def _fake_make_llm(seen: list[dict[str, Any]]):
    def make(spec: str, **kwargs: Any) -> FakeLLM:
        seen.append({"spec": spec, **kwargs})
        return FakeLLM()

    return make


def test_predictor_applies_its_options_to_the_config(monkeypatch):
    import emotion_llama.backends.llm as llm_mod
    import emotion_llama.perception.pipeline as pipeline_mod
    from emotion_llama.serve.predictor import Predictor

    class FakePerceiver:
        def __init__(self, config: Any, **kwargs: Any) -> None:
            self.config = config

        def close(self) -> None:
            pass

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(llm_mod, "make_llm", _fake_make_llm(seen))
    monkeypatch.setattr(pipeline_mod, "Perceiver", FakePerceiver)
    p = Predictor(
        preset="tiny", transcribe=False, device="cuda:1", llm_dtype="bf16", max_new_tokens=40,
        language="auto", asr_model="small", label_set=("calm", "tense"),
    )  # fmt: skip
    assert seen == [{"spec": "offline", "cache": None, "device": "cuda:1", "dtype": "bf16"}]
    assert p.perceiver.config.language is None and p.perceiver.config.asr_model == "small"
    assert p.config.generation.max_new_tokens == 40 and p.max_new_tokens == 40
    assert p.label_set == ("calm", "tense")
    p = Predictor(preset="tiny", transcribe=False, device="cpu", llm_device="cuda", language="fr")
    assert seen[-1]["device"] == "cuda" and seen[-1]["dtype"] is None
    assert p.config.perception.language == "fr" and p.config.perception.asr_model == "offline"
    assert p.label_set == LABELS and p.max_new_tokens is None
    for bad in ({"max_new_tokens": 0}, {"llm_dtype": "fp8"}, {"label_set": ("a", "a")}, {"label_set": ()}):
        with pytest.raises(EmotionLlamaError):
            Predictor(preset="tiny", transcribe=False, **bad)


def test_load_config_applies_speech_overrides():
    from emotion_llama.cli import _load_config, _speech_options

    assert _speech_options(None, None) == {}
    assert _speech_options("AUTO", " base ") == {"language": None, "asr_model": "base"}
    assert _speech_options("de", None) == {"language": "de"}
    with pytest.raises(EmotionLlamaError, match="--language"):
        _speech_options(" ", None)
    assert _load_config("tiny") == _load_config("tiny", language=None, asr_model=None)


# -- many clips on real media (the fake stands in for the LLM text only) ---------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    from emotion_llama.media.samples import make_speaking_clip, real_media_dir

    root = tmp_path_factory.mktemp("many")
    try:
        face = real_media_dir() / "WolfgangLanger_Pexels.mp4"
        a, c = root / "a.mp4", root / "c.mp4"
        make_speaking_clip(face, "This is the best day of my life.", a, start=10.0, seconds=2.0)
        make_speaking_clip(face, "What a wonderful surprise.", c, start=10.0, seconds=2.0)
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    broken = root / "broken.mp4"
    broken.write_text("this is not a video\n", encoding="utf-8")
    truncated = root / "truncated.mp4"
    truncated.write_bytes(a.read_bytes()[:3000])
    return {"a": a, "c": c, "broken": broken, "truncated": truncated}


@pytest.mark.slow
def test_analyze_many_with_a_broken_clip_writes_all_outputs_in_order(clips, tmp_path, monkeypatch):
    import emotion_llama.backends.llm as llm_mod

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(llm_mod, "make_llm", _fake_make_llm(seen))
    out = tmp_path / "out"
    args = [
        "analyze", str(clips["a"]), str(clips["broken"]), str(clips["c"]), "--preset", "tiny",
        "--jsonl", str(out / "r.jsonl"), "--csv", str(out / "r.csv"), "--json", str(out / "r.json"),
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert seen and seen[0]["device"] == "cpu" and seen[0]["dtype"] is None
    lines = [json.loads(x) for x in (out / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["name"] for x in lines] == ["a", "broken", "c"]
    assert set(lines[1]) == {"name", "video", "error"} and "broken.mp4" in lines[1]["error"]
    assert lines[1]["video"] == str(clips["broken"])
    for ok in (lines[0], lines[2]):
        assert "error" not in ok and ok["label"] == "happy" and ok["clues"]["peak_AU_list"]
        assert ok["video"] in (str(clips["a"]), str(clips["c"]))
    assert "best day" in lines[0]["clues"]["subtitle"].lower()
    with (out / "r.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["a", "broken", "c"] and list(rows[0]) == list(CSV_COLUMNS)
    assert rows[1]["error"] == lines[1]["error"] and rows[1]["label"] == ""
    assert (
        rows[0]["error"] == "" and rows[0]["label"] == "happy" and "best day" in rows[0]["subtitle"].lower()
    )
    assert json.loads((out / "r.json").read_text(encoding="utf-8")) == lines
    # PNGs only for the clips that succeeded, next to the JSON
    assert sorted(p.name for p in out.glob("*.png")) == ["r.a.au.png", "r.c.au.png"]
    assert "failed clips" in res.stderr and "broken.mp4" in res.stderr

    # a folder argument: its videos, sorted; a truncated file fails in its place too
    folder = tmp_path / "folder"
    folder.mkdir()
    for key in ("a", "truncated", "c"):
        (folder / clips[key].name).write_bytes(clips[key].read_bytes())
    (folder / "notes.txt").write_text("not a video", encoding="utf-8")
    res = runner.invoke(app, ["analyze", str(folder), "--preset", "tiny", "--jsonl", str(out / "f.jsonl")])
    assert res.exit_code == 1, res.output
    lines = [json.loads(x) for x in (out / "f.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["name"] for x in lines] == ["a", "c", "truncated"]
    assert "error" in lines[2] and "truncated.mp4" in lines[2]["error"]
    assert all("error" not in x for x in lines[:2])

    # every clip fine: exit code 0, one object in --json for one clip
    res = runner.invoke(
        app, ["analyze", str(clips["a"]), "--preset", "tiny", "--json", str(out / "one.json")]
    )
    assert res.exit_code == 0, res.output
    one = json.loads((out / "one.json").read_text(encoding="utf-8"))
    assert one["name"] == "a" and one["label"] == "happy" and (out / "one.au.png").is_file()


@pytest.mark.slow
def test_analyze_many_perception_errors_stay_in_their_place(clips, monkeypatch):
    """``Predictor.analyze_many`` on its own: a missing file, a text file and a truncated mp4 each
    get an error naming the file; the good clips are answered."""
    import emotion_llama.backends.llm as llm_mod
    from emotion_llama.serve.predictor import Predictor

    monkeypatch.setattr(llm_mod, "make_llm", _fake_make_llm([]))
    missing = clips["a"].parent / "missing.mp4"
    with Predictor(preset="tiny") as p:
        got = p.analyze_many([clips["a"], missing, clips["broken"], clips["truncated"], clips["c"]])
    assert [type(g).__name__ for g in (got[0], got[4])] == ["Analysis", "Analysis"]
    for g, path in zip(got[1:4], (missing, clips["broken"], clips["truncated"]), strict=True):
        assert isinstance(g, EmotionLlamaError) and str(path) in str(g)


@pytest.mark.slow
def test_full_model_uses_the_label_set_and_the_reasoning_length(clips, tmp_path, tiny_config, monkeypatch):
    import emotion_llama.model.generation as generation
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained
    from emotion_llama.serve.predictor import Predictor

    asked: list[tuple[str, int]] = []
    real = generation.Generator

    def spy(*args: Any, **kwargs: Any) -> Any:
        asked.append((kwargs["task"], kwargs["max_new_tokens"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "Generator", spy)
    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    with Predictor(model_dir=ckpt, label_set=("happy", "sad", "bored"), max_new_tokens=3) as p:
        assert p.config.generation.max_new_tokens == 3
        a = p.analyze(clips["a"])
        assert a.scores is not None and set(a.scores) == {"happy", "sad", "bored"}
        assert a.label in ("happy", "sad", "bored")
    assert ("reason", 3) in asked
