"""Exports of a dataset folder for other trainers: LLaMA-Factory's ShareGPT JSON (read back with the
``datasets`` library, as LLaMA-Factory reads it) with its dataset_info.json entry, and ms-swift's
JSONL; media paths absolute or relative to the dataset folder, valid from any working directory."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image
from typer.testing import CliRunner

from emotion_llama.annotate.export import chat_user_content, validate_record, write_all
from emotion_llama.annotate.trainers import (
    DATASET_INFO_FILE,
    SHAREGPT_FILE,
    SWIFT_FILE,
    TrainerExportError,
    media_path,
    write_trainer_exports,
)
from emotion_llama.cli import app
from emotion_llama.names import json_bytes
from emotion_llama.prompts import EMOTION_INSTRUCTION, REASON_INSTRUCTIONS

runner = CliRunner()


def _record(name: str, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "schema": "emotion-llama-merr/2",
        "name": name,
        "source": f"/nonexistent/videos/{name}.mp4",
        "label": "happy",
        "label_source": "face",
        "subtitle": "I can't believe it, we won!",
        "subtitle_source": "whisper:offline",
        "peak_index": 3,
        "peak_time_s": 0.12,
        "AU_list": ["AU06", "AU12"],
        "peak_AU_list": ["AU06", "AU12"],
        "au_intensities": {"AU06": 2.1, "AU12": 3.4},
        "visual_expression": "cheek raiser, lip corner puller",
        "visual_prior_list": ["cheek raiser", "lip corner puller"],
        "visual_objective": None,
        "audio_tone": "excited and loud",
        "audio_prior_list": ["excited", "loud"],
        "prosody": None,
        "candidate_labels": [{"label": "happy", "share": 1.0}],
        "caption": f"The person's expression and actions include cheek raiser. Saying: {name}",
        "smp_reason_caption": f"The smile and the excited tone of {name} show happiness.",
        "llm_label": "happy",
        "llm": "offline-rules",
        "keep": True,
        "filter_reason": None,
        "missing": [],
        "peak_frame": None,
        "au_timeline_png": None,
        "eyes": None,
        "modalities": {"face": {"label": "happy", "confidence": 1.0}, "voice": None, "words": None},
        "conflict": False,
        "conflict_reason": None,
        "reasoning_source": "grounded",
        "faithfulness": None,
        "rejected_reasoning": [],
        "model_answer": None,
    }
    rec.update(over)
    validate_record(rec)
    return rec


def _write_dataset(root: Path, final: list[dict[str, Any]], stage: list[dict[str, Any]]) -> Path:
    """A dataset folder as annotate leaves it: records/ holds the reasoning stage (``stage``), the
    exports the records after the final filtering (``final``)."""
    for rec in stage:
        (root / "records").mkdir(parents=True, exist_ok=True)
        (root / "records" / f"{rec['name']}.json").write_bytes(json_bytes(rec, indent=1))
    write_all(final, root)
    return root


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """clip_a: its video (absolute source); clip_b: no video, its peak frame in frames/; clip_c:
    neither (skipped); clip_d: filtered out by the LLM stage; clip_e: filtered as a near-duplicate
    at export (records/ still says keep); clip_f: its video by a path relative to tmp_path."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("clip_a", "clip_f"):
        (videos / f"{name}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    root = tmp_path / "dataset"
    (root / "frames").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 120, 90)).save(root / "frames" / "clip_b.jpg")
    stage = [
        _record("clip_a", source=str(videos / "clip_a.mp4")),
        _record("clip_b", label="sad", subtitle="", peak_frame="frames/clip_b.jpg"),
        _record("clip_c"),
        _record("clip_d", keep=False, filter_reason="llm disagrees with AUs", smp_reason_caption=None),
        _record("clip_e", source=str(videos / "clip_a.mp4")),
        _record("clip_f", source="videos/clip_f.mp4", label="surprise"),
    ]
    final = [dict(r) for r in stage]
    final[4].update(keep=False, filter_reason="near-duplicate of clip_a")
    return _write_dataset(root, final, stage)


def _load(path: Path, tmp_path: Path) -> datasets.Dataset:
    loaded = datasets.load_dataset("json", data_files=str(path), cache_dir=str(tmp_path / "hf-cache"))
    return loaded["train"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sharegpt_loads_with_datasets_and_every_absolute_media_path_exists(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat_before = _digest(dataset / "chat.jsonl")
    monkeypatch.chdir(tmp_path)  # where annotate ran: clip_f's relative source resolves here
    result = write_trainer_exports(dataset, ("sharegpt",), "absolute")
    assert [p.name for p in result.files] == [SHAREGPT_FILE, DATASET_INFO_FILE]
    assert not (dataset / SWIFT_FILE).exists()
    assert (result.records, result.samples, result.videos, result.images) == (3, 6, 2, 1)
    assert [name for name, _ in result.skipped] == ["clip_c"]
    assert "no media" in result.skipped[0][1]

    monkeypatch.chdir(tmp_path / "videos")  # any other working directory
    ds = _load(dataset / SHAREGPT_FILE, tmp_path)
    assert set(ds.column_names) == {"conversations", "videos", "images"}
    assert len(ds) == 6
    chat = {json.loads(line)["id"]: json.loads(line) for line in (dataset / "chat.jsonl").open()}
    reasons = []
    for row in ds:
        (user, answer) = row["conversations"]
        assert (user["from"], answer["from"]) == ("human", "gpt")
        media = row["videos"] or row["images"]
        assert len(media) == 1 and (row["videos"] is None) != (row["images"] is None)
        assert Path(media[0]).is_absolute() and Path(media[0]).is_file()
        assert user["value"].startswith("<video>\n" if row["videos"] else "<image>\n")
        if EMOTION_INSTRUCTION in user["value"]:
            assert answer["value"] in ("happy", "sad", "surprise")
        else:
            assert REASON_INSTRUCTIONS[0] in user["value"]
            reasons.append(answer["value"])
    assert sorted(reasons) == sorted(
        chat[n]["messages"][1]["content"] for n in ("clip_a", "clip_b", "clip_f")
    )
    # the reasoning sample of a clip with its video is chat.jsonl's line for it
    video_reason = next(r for r in ds if r["videos"] and "clip_a" in r["conversations"][1]["value"])
    assert video_reason["conversations"][0]["value"] == chat["clip_a"]["messages"][0]["content"]
    assert video_reason["videos"] == [str(tmp_path / "videos" / "clip_a.mp4")]
    image_rows = [r for r in ds if r["images"]]
    assert [r["images"] for r in image_rows] == [[str(dataset / "frames" / "clip_b.jpg")]] * 2
    assert image_rows[0]["conversations"][0]["value"] == chat_user_content("", EMOTION_INSTRUCTION, "<image>")
    assert _digest(dataset / "chat.jsonl") == chat_before  # the existing export is left as it was

    info = json.loads((dataset / DATASET_INFO_FILE).read_text("utf-8"))
    assert info == {
        "emotion_llama": {
            "file_name": SHAREGPT_FILE,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "videos": "videos", "images": "images"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
            "comment": "media paths are absolute",
        }
    }


def test_relative_paths_resolve_against_the_dataset_folder_from_anywhere(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = write_trainer_exports(dataset, paths="relative")
    assert [p.name for p in result.files] == [SHAREGPT_FILE, DATASET_INFO_FILE, SWIFT_FILE]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ds = _load(dataset / SHAREGPT_FILE, tmp_path)
    media = sorted({p for row in ds for p in (row["videos"] or row["images"])})
    assert media == ["../videos/clip_a.mp4", "../videos/clip_f.mp4", "frames/clip_b.jpg"]
    for rel in media:
        assert not Path(rel).is_absolute()
        assert (dataset / rel).is_file()  # as LLaMA-Factory joins it to media_dir = the dataset folder
        assert os.path.isfile(os.path.join(str(dataset), rel))
    entry = json.loads((dataset / DATASET_INFO_FILE).read_text("utf-8"))["emotion_llama"]
    assert "relative to the dataset folder" in entry["comment"] and "media_dir" in entry["comment"]
    swift = [json.loads(line) for line in (dataset / SWIFT_FILE).read_text("utf-8").splitlines()]
    assert sorted({p for r in swift for p in r.get("videos", []) + r.get("images", [])}) == media


def test_swift_jsonl_messages_and_a_system_prompt(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path / "videos")  # clip_f's relative source does not resolve from here
    out = tmp_path / "exports"
    result = write_trainer_exports(
        dataset, ["swift", "sharegpt", "swift"], "absolute", out, system="You are an emotion analysis expert."
    )
    assert [p.parent for p in result.files] == [out] * 3
    assert not (dataset / SWIFT_FILE).exists() and not (dataset / SHAREGPT_FILE).exists()
    lines = [json.loads(line) for line in (out / SWIFT_FILE).read_text("utf-8").splitlines()]
    assert len(lines) == 4  # clip_a and clip_b: clip_f's video is not found from this directory
    for line in lines:
        assert [m["role"] for m in line["messages"]] == ["system", "user", "assistant"]
        assert line["messages"][0]["content"] == "You are an emotion analysis expert."
        (key,) = set(line) - {"messages"}
        assert key in ("videos", "images")
        assert line["messages"][1]["content"].startswith("<video>" if key == "videos" else "<image>")
        assert Path(line[key][0]).is_file()
    assert [name for name, _ in result.skipped] == ["clip_c", "clip_f"]
    ds = _load(out / SWIFT_FILE, tmp_path)
    assert {"messages", "videos", "images"} <= set(ds.column_names)
    sharegpt = _load(out / SHAREGPT_FILE, tmp_path)
    assert set(sharegpt["system"]) == {"You are an emotion analysis expert."}
    entry = json.loads((out / DATASET_INFO_FILE).read_text("utf-8"))["emotion_llama"]
    assert entry["columns"]["system"] == "system"


def test_video_dir_finds_moved_videos_and_dataset_info_keeps_other_entries(
    dataset: Path, tmp_path: Path
) -> None:
    (dataset / DATASET_INFO_FILE).write_text(json.dumps({"mine": {"file_name": "mine.json"}}), "utf-8")
    result = write_trainer_exports(dataset, ["sharegpt"], video_dir=tmp_path / "videos")
    assert result.videos == 2 and [n for n, _ in result.skipped] == ["clip_c"]
    info = json.loads((dataset / DATASET_INFO_FILE).read_text("utf-8"))
    assert set(info) == {"mine", "emotion_llama"}


def test_bad_options_and_folders_are_errors(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainerExportError, match="alpaca"):
        write_trainer_exports(dataset, ["alpaca"])
    with pytest.raises(TrainerExportError, match="absolute or relative"):
        write_trainer_exports(dataset, paths="cwd")
    with pytest.raises(TrainerExportError, match="no records/ folder"):
        write_trainer_exports(tmp_path / "videos")
    assert not (tmp_path / "videos" / SHAREGPT_FILE).exists()


def test_an_unreadable_record_is_listed_not_fatal(dataset: Path) -> None:
    (dataset / "records" / "clip_a.json").write_text("{not json", "utf-8")
    result = write_trainer_exports(dataset, ["swift"])
    assert dict(result.skipped).keys() == {"clip_a", "clip_c", "clip_f"}
    assert "not valid JSON" in dict(result.skipped)["clip_a"]


def test_media_path_modes(tmp_path: Path) -> None:
    root = tmp_path / "d"
    assert media_path(root / "frames" / "x.jpg", root, "relative") == "frames/x.jpg"
    assert media_path(tmp_path / "v.mp4", root, "relative") == "../v.mp4"
    assert media_path(root / "frames" / "x.jpg", root) == str(root / "frames" / "x.jpg")


# -- the commands ----------------------------------------------------------------------------------
def test_export_command(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(
        app, ["export", str(dataset), "--format", "sharegpt", "--format", "swift", "--paths", "relative"]
    )
    assert res.exit_code == 1, res.output  # clip_c has no media: listed, exit code 1
    assert "clip_c" in res.stderr and "Traceback" not in res.output
    assert "6 samples from 3 records" in " ".join(res.stdout.split())
    for name in (SHAREGPT_FILE, DATASET_INFO_FILE, SWIFT_FILE):
        assert (dataset / name).is_file()
    assert len(_load(dataset / SHAREGPT_FILE, tmp_path)) == 6

    (dataset / "records" / "clip_c.json").unlink()  # now every kept record has its media
    res = runner.invoke(app, ["export", str(dataset), "-f", "swift", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / SWIFT_FILE).is_file() and not (tmp_path / "o" / SHAREGPT_FILE).exists()


def test_export_command_bad_input_is_one_line_exit_2(dataset: Path, tmp_path: Path) -> None:
    for args, says in (
        (["export", str(dataset), "--paths", "cwd"], "absolute or relative"),
        (["export", str(dataset), "--format", "alpaca"], "alpaca"),
        (["export", str(tmp_path / "nope")], "no such folder"),
        (["export", str(tmp_path / "videos")], "no records/ folder"),
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert says in " ".join(res.stderr.split()) and "Traceback" not in res.output


def test_annotate_checks_its_export_options_before_any_clip(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    res = runner.invoke(
        app, ["annotate", str(tmp_path / "videos"), "--out", str(tmp_path / "ds"), "--export", "alpaca"]
    )
    assert res.exit_code == 2 and "alpaca" in res.stderr
    assert not (tmp_path / "ds").exists()
    res = runner.invoke(app, ["annotate", "--help"])
    assert "--export" in res.stdout and "--export-paths" in res.stdout


def test_relative_paths_with_the_files_elsewhere_name_the_dataset_folder(
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "llamafactory-data"
    write_trainer_exports(dataset, ["sharegpt"], "relative", out)
    entry = json.loads((out / DATASET_INFO_FILE).read_text("utf-8"))["emotion_llama"]
    assert str(dataset) in entry["comment"]
    rows = json.loads((out / SHAREGPT_FILE).read_text("utf-8"))
    assert all((dataset / (r.get("videos") or r["images"])[0]).is_file() for r in rows)
