"""The dataset record schema, the MERR / NCEV / subtitle / chat exports, and the HTML/Markdown report."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from emotion_llama.annotate.export import (
    EXPORT_FILES,
    RECORD_SCHEMA,
    RecordError,
    validate_record,
    write_all,
    write_chat_jsonl,
    write_merr_json,
    write_ncev,
    write_subtitles,
)
from emotion_llama.annotate.report import write_report
from emotion_llama.data.formats.lists import read_ncev, read_subtitles
from emotion_llama.errors import EmotionLlamaError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XSS = "<script>alert('x')</script>"


def _record(name: str, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "schema": "emotion-llama-merr/2",
        "name": name,
        "source": f"/videos/{name}.mp4",
        "label": "happy",
        "label_source": "au",
        "subtitle": "I can't believe it, we won!",
        "subtitle_source": "whisper:offline",
        "peak_index": 12,
        "peak_time_s": 0.48,
        "AU_list": ["AU06", "AU12"],
        "peak_AU_list": ["AU06", "AU12", "AU25"],
        "au_intensities": {"AU06": 2.1, "AU12": 3.4, "AU25": 1.2, "AU04": 0.1},
        "visual_expression": "cheek raiser, lip corner puller, lips part",
        "visual_prior_list": ["cheek raiser", "lip corner puller", "lips part"],
        "visual_objective": None,
        "audio_tone": "excited and loud",
        "audio_prior_list": ["excited", "loud"],
        "prosody": {"pitch_mean_hz": 210.0},
        "candidate_labels": [{"label": "happy", "share": 0.67}],
        "caption": "The person's expression and actions include cheek raiser. Saying: we won!",
        "smp_reason_caption": "The smile and excited tone show the person feels happy.",
        "llm_label": "happy",
        "llm": "offline-rules",
        "keep": True,
        "filter_reason": None,
        "missing": [],
        "peak_frame": f"frames/{name}.jpg",
        "au_timeline_png": None,
        "eyes": {"blinks": 2, "blinks_per_min": None, "closures_s": [], "closed_s": 0.0},
        "modalities": {
            "face": {"label": "happy", "confidence": 0.67},
            "voice": None,
            "words": {"label": "happy", "confidence": 0.6},
        },
        "conflict": False,
        "conflict_reason": None,
        "reasoning_source": "llm",
        "faithfulness": {"ok": True, "source": "llm", "attempts": 1, "first_answer_ok": True},
        "rejected_reasoning": [],
        "model_answer": None,
    }
    rec.update(over)
    return rec


@pytest.fixture()
def records() -> list[dict[str, Any]]:
    return [
        _record("sample_00000001", n_frames=22, valence=-0.61232674),
        _record(
            "sample_00000002",
            label="sad",
            subtitle=f'Well, "fine", {XSS}\nwhatever',
            smp_reason_caption="Lowered brows and a flat tone suggest sadness.",
            AU_list=["AU04", "AU15"],
            peak_AU_list=["AU04"],
            au_intensities={"AU04": 2.5, "AU15": 0.9},
        ),
        # No face: no peak, no AUs, no thumbnail; labelled by the user, kept.
        _record(
            "sample_00000003",
            label="neutral",
            label_source="user",
            peak_index=None,
            peak_time_s=None,
            AU_list=[],
            peak_AU_list=[],
            au_intensities={},
            visual_expression=None,
            visual_prior_list=[],
            candidate_labels=[],
            peak_frame=None,
            missing=["face: no face found in 48 frames"],
        ),
        # Filtered: the LLM disagreed with the AU label; no reasoning and no label.
        _record(
            "sample_00000004",
            label=None,
            label_source=None,
            llm_label="angry",
            smp_reason_caption=None,
            keep=False,
            filter_reason="llm disagrees with AUs",
            subtitle="",
            subtitle_source=None,
            missing=["speech: no words recognised"],
        ),
    ]


def _strict(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in ("n_frames", "valence")}


# -- schema ----------------------------------------------------------------------------------------
def test_schema_requires_exactly_the_record_keys(records: list[dict[str, Any]]) -> None:
    assert RECORD_SCHEMA["additionalProperties"] is False
    assert set(RECORD_SCHEMA["required"]) == set(RECORD_SCHEMA["properties"]) == set(_strict(records[0]))
    for rec in records:
        validate_record(_strict(rec))


@pytest.mark.parametrize(
    ("change", "path_part"),
    [
        ({"peak_index": "12"}, "$.peak_index"),
        ({"keep": "yes"}, "$.keep"),
        ({"au_intensities": {"AU12": 7.0}}, "$.au_intensities.AU12"),
        ({"candidate_labels": [{"label": "happy"}]}, "$.candidate_labels[0]"),
        ({"label_source": "guess"}, "$.label_source"),
        ({"peak_frame": "/abs/frame.jpg"}, "$.peak_frame"),
        ({"peak_frame": "../outside.jpg"}, "$.peak_frame"),
        ({"surprise_key": 1}, "surprise_key"),
    ],
)
def test_invalid_record_names_clip_and_path(
    records: list[dict[str, Any]], change: dict[str, Any], path_part: str
) -> None:
    rec = copy.deepcopy(_strict(records[1]))
    rec.update(change)
    with pytest.raises(RecordError) as info:
        validate_record(rec)
    msg = str(info.value)
    assert isinstance(info.value, EmotionLlamaError)
    assert "sample_00000002" in msg
    assert path_part in msg


def test_missing_key_and_non_mapping_fail(records: list[dict[str, Any]]) -> None:
    rec = _strict(records[0])
    del rec["caption"]
    with pytest.raises(RecordError, match=r"sample_00000001.*'caption' is a required property"):
        validate_record(rec)
    with pytest.raises(RecordError, match="must be a JSON object"):
        validate_record(["not", "a", "record"])  # type: ignore[arg-type]


def test_write_all_refuses_invalid_records_before_writing(
    records: list[dict[str, Any]], tmp_path: Path
) -> None:
    records[2]["keep"] = "maybe"
    with pytest.raises(RecordError, match="sample_00000003"):
        write_all(records, tmp_path)
    assert not any(tmp_path.iterdir())


def test_duplicate_names_are_refused(records: list[dict[str, Any]], tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="more than one record"):
        write_merr_json([records[0], copy.deepcopy(records[0])], tmp_path / "m.json")


# -- exports ---------------------------------------------------------------------------------------
def test_write_all_writes_every_file_and_no_temp_files(records: list[dict[str, Any]], tmp_path: Path) -> None:
    paths = write_all(records, tmp_path / "ds")
    assert [p.name for p in paths] == list(EXPORT_FILES)
    assert all(p.is_file() for p in paths)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == sorted(EXPORT_FILES)


def test_merr_coarse_and_fine(records: list[dict[str, Any]], tmp_path: Path) -> None:
    records[2]["caption"] = ""  # a record without a caption is left out of the coarse set
    # A filtered record stays out of the fine set even when it has a reasoning.
    records[3]["smp_reason_caption"] = "Contradictory reasoning."
    coarse = json.loads(write_merr_json(records, tmp_path / "c.json", "coarse").read_text("utf-8"))
    fine = json.loads(write_merr_json(records, tmp_path / "f.json", "fine").read_text("utf-8"))

    assert set(coarse) == {"sample_00000001", "sample_00000002", "sample_00000004"}
    # fine = kept records with a reasoning: the filtered one and the caption-less-but-kept one differ.
    assert set(fine) == {"sample_00000001", "sample_00000002", "sample_00000003"}
    clues = {
        "AU_list",
        "visual_prior_list",
        "audio_prior_list",
        "peak_index",
        "peak_AU_list",
        "pseu_emotion",
        "text",
    }
    assert set(coarse["sample_00000001"]) == clues | {"caption"}
    assert set(fine["sample_00000001"]) == clues | {"smp_reason_caption"}
    e = coarse["sample_00000002"]
    assert e["pseu_emotion"] == "sad"
    assert e["text"] == records[1]["subtitle"]
    assert e["AU_list"] == ["AU04", "AU15"]
    assert e["peak_index"] == 12
    assert fine["sample_00000002"]["smp_reason_caption"].startswith("Lowered brows")
    assert coarse["sample_00000004"]["pseu_emotion"] is None
    with pytest.raises(RecordError, match="unknown MERR kind"):
        write_merr_json(records, tmp_path / "x.json", "medium")  # type: ignore[arg-type]


def test_ncev_reads_back(records: list[dict[str, Any]], tmp_path: Path) -> None:
    path = write_ncev(records, tmp_path / "labels.txt")
    lines = path.read_text("utf-8").splitlines()
    assert lines[0] == "sample_00000001 22 happy -0.61232674"
    clips = read_ncev(path)
    # Only labelled records; the unlabelled filtered clip is absent.
    assert [(c.name, c.label) for c in clips] == [
        ("sample_00000001", "happy"),
        ("sample_00000002", "sad"),
        ("sample_00000003", "neutral"),
    ]
    assert clips[0].valence == pytest.approx(-0.61232674)
    # Without n_frames / valence: frame count 0 and valence 0.0.
    assert lines[1].split()[1] == "0"
    assert clips[1].valence == 0.0


def test_ncev_refuses_label_with_spaces(records: list[dict[str, Any]], tmp_path: Path) -> None:
    records[0]["label"] = "very happy"
    with pytest.raises(RecordError, match="sample_00000001"):
        write_ncev(records, tmp_path / "labels.txt")


def test_subtitles_round_trip_with_quotes_and_newlines(records: list[dict[str, Any]], tmp_path: Path) -> None:
    path = write_subtitles(records, tmp_path / "subtitles.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == ["name", "sentence"]
    subs = read_subtitles(path)
    assert list(subs) == [r["name"] for r in records]
    assert subs["sample_00000002"] == records[1]["subtitle"]
    assert subs["sample_00000004"] == ""


def test_chat_jsonl(records: list[dict[str, Any]], tmp_path: Path) -> None:
    instruction = "Why does the person feel this way?"
    records[3]["smp_reason_caption"] = "Contradictory reasoning."  # filtered: still no chat line
    path = write_chat_jsonl(records, tmp_path / "chat.jsonl", instruction)
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["sample_00000001", "sample_00000002", "sample_00000003"]
    for row, rec in zip(rows, records, strict=False):
        assert set(row) == {"id", "video", "messages", "label"}
        assert row["video"] == rec["source"]
        assert row["label"] == rec["label"]
        user, assistant = row["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert instruction in user["content"]
        assert rec["subtitle"] in user["content"]
        assert assistant["content"] == rec["smp_reason_caption"]
    with pytest.raises(RecordError, match="instruction"):
        write_chat_jsonl(records, tmp_path / "chat2.jsonl", "  ")


# -- report ----------------------------------------------------------------------------------------
def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


def test_report(records: list[dict[str, Any]], tmp_path: Path) -> None:
    out = tmp_path / "ds"
    (out / "frames").mkdir(parents=True)
    for rec in records:
        if rec["peak_frame"]:
            Image.new("RGB", (32, 24), (200, 120, 90)).save(out / rec["peak_frame"], format="JPEG")
    records[0]["subtitle"] = f"Hello {XSS} & bye"
    paths = write_report(records, out, title="Test <set>")
    names = {p.relative_to(out).as_posix() for p in paths}
    assert {"report.md", "report.html", "label_distribution.png", "au_frequency.png"} <= names
    # One AU card per record with intensities (the no-face clip has none).
    assert {f"cards/{r['name']}_aus.png" for r in records if r["au_intensities"]} <= names
    assert not (out / "cards" / "sample_00000003_aus.png").exists()
    for p in paths:
        assert p.is_file()
        if p.suffix == ".png":
            assert _is_png(p)
            with Image.open(p) as im:
                assert im.width > 50 and im.height > 50

    page = (out / "report.html").read_text("utf-8")
    for rec in records:
        if rec["keep"]:
            assert rec["name"] in page
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "Test &lt;set&gt;" in page
    assert 'src="frames/sample_00000001.jpg"' in page
    assert 'src="cards/sample_00000002_aus.png"' in page
    assert 'src="label_distribution.png"' in page and 'src="au_frequency.png"' in page
    assert "llm disagrees with AUs" in page
    # Every referenced image exists relative to the report.
    import re

    for src in re.findall(r'src="([^"]+)"', page):
        assert (out / src).is_file(), src

    md = (out / "report.md").read_text("utf-8")
    assert "<script>" not in md
    assert "| clips | 4 |" in md and "| kept | 3 |" in md
    assert "| filtered: llm disagrees with AUs | 1 |" in md
    assert "| missing face | 1 |" in md and "| missing speech | 1 |" in md and "| missing audio | 0 |" in md
    assert "| happy | 1 | 1 |" in md and "| sad | 1 | 1 |" in md
    # AU12 is active at the peak in two clips (1 and 4) and in AU_list of the same two.
    assert "| AU12 | lip corner puller | 2 | 2 |" in md
    assert "| AU25 | lips part | 2 | 0 |" in md


def test_report_peak_frame_relative_to_dataset_dir(records: list[dict[str, Any]], tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    (ds / "frames").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(ds / "frames" / "sample_00000001.jpg", format="JPEG")
    write_report(records[:1], tmp_path / "reports", dataset_dir=ds)
    page = (tmp_path / "reports" / "report.html").read_text("utf-8")
    assert 'src="../ds/frames/sample_00000001.jpg"' in page
    # A thumbnail that does not exist is not linked (no broken images).
    write_report(records[1:2], tmp_path / "reports2", dataset_dir=ds)
    assert "frames/sample_00000002.jpg" not in (tmp_path / "reports2" / "report.html").read_text("utf-8")
