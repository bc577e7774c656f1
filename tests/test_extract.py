"""probe and extract on real media: a real face clip with synthetic speech of known sentences,
and the broken files users feed a batch job (slow: real face and speech models)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.media.samples import make_speaking_clip, real_media_dir

pytestmark = pytest.mark.slow

SENTENCES = [
    "I cannot believe you did that to me.",
    "This is the best day of my whole life.",
    "Please leave me alone for a while.",
    "What a wonderful surprise this is.",
    "I am not sure what will happen next.",
]


def _feat_data() -> Path:
    try:
        return real_media_dir()
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))


def _need(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} is not installed (scripts/setup.sh installs it)")


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def make_clip(face: Path, text: str, out: Path, start: float, seconds: float = 2.5) -> None:
    make_speaking_clip(face, text, out, start=start, seconds=seconds)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    _need("ffmpeg", "espeak-ng")
    data = _feat_data()
    root = tmp_path_factory.mktemp("videos")
    face = data / "WolfgangLanger_Pexels.mp4"
    for i, text in enumerate(SENTENCES):
        make_clip(face, text, root / f"good_{i}.mp4", start=3.0 * i)
    good = (root / "good_0.mp4").read_bytes()
    (root / "bad_truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "bad_text.mp4").write_text("this is not a video\n")
    (root / "bad_empty.mp4").write_bytes(b"")
    _run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-i",
            str(root / "good_1.mp4"),
            "-an",
            "-c:v",
            "copy",
            str(root / "bad_noaudio.mp4"),
        ]
    )
    make_clip(data / "no_face.mp4", "There is nobody here.", root / "bad_noface.mp4", start=0.0, seconds=2.0)
    return root


def cli(*args: str, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "emotion_llama.cli", *args], capture_output=True, text=True, env=env, **kw
    )


def test_probe_real_clip(videos, tmp_path):
    from emotion_llama.metrics import word_error_rate

    r = cli("probe", str(videos / "good_1.mp4"), "--json", str(tmp_path / "p.json"), "--preset", "tiny")
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "p.json").read_text())
    assert rec["faces"]["frames_with_face"] >= 0.9 * rec["faces"]["frames_analysed"]
    # 3.0-5.5 s of the video: she cries, eyes shut and brows knit (the cry face, not a smile)
    assert rec["peak"]["index"] is not None and rec["peak"]["aus"]["AU04"] > 1.0
    assert rec["peak"]["aus"]["AU12"] == 0.0 and "eyes closed" in rec["eyes"]["phrases"]
    assert word_error_rate(SENTENCES[1], rec["transcript"]["text"]) <= 0.1
    assert (tmp_path / "p.au.png").read_bytes()[:4] == b"\x89PNG"
    assert "AU peak at" in r.stdout


def test_probe_clip_without_face_or_audio_still_reports(videos, tmp_path):
    r = cli("probe", str(videos / "bad_noface.mp4"), "--json", str(tmp_path / "n.json"), "--preset", "tiny")
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "n.json").read_text())
    assert rec["faces"]["frames_with_face"] == 0 and rec["peak"]["index"] is None
    assert any(m.startswith("face:") for m in rec["missing"])
    assert "here" in rec["transcript"]["text"].lower()  # the audio and text still come through
    r = cli("probe", str(videos / "bad_noaudio.mp4"), "--json", str(tmp_path / "a.json"), "--preset", "tiny")
    rec = json.loads((tmp_path / "a.json").read_text())
    assert "audio: the file has no audio stream" in rec["missing"] and rec["peak"]["index"] is not None
    r = cli("probe", str(videos / "bad_text.mp4"), "--preset", "tiny")
    assert r.returncode == 2 and "bad_text.mp4" in r.stderr and "Traceback" not in r.stderr


def test_extract_good_and_bad_then_resume_after_sigkill(videos, tmp_path):
    out = tmp_path / "features"
    args = [
        "extract",
        str(videos),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--layout",
        "authors",
        "--workers",
        "1",
        "--batch-size",
        "1",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emotion_llama.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    manifest = out / "manifest.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if manifest.exists():
            try:
                if len(json.loads(manifest.read_text()).get("clips", {})) >= 2:
                    break
            except json.JSONDecodeError:
                pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = json.loads(manifest.read_text())["clips"]
    assert 2 <= len(done_before) < 5
    stamps = {n: (out / "HL-UTT" / f"{n}.npy").stat().st_mtime_ns for n in done_before}

    r = cli(*args)
    assert r.returncode == 1, r.stdout + r.stderr  # bad clips: non-zero exit
    assert (
        f"10 videos: {len(done_before)} already done, {5 - len(done_before)} written, 5 failed"
        in " ".join(r.stdout.split())
    )
    for bad in ("bad_truncated", "bad_text", "bad_empty", "bad_noaudio", "bad_noface"):
        assert bad in r.stderr
    clips = json.loads(manifest.read_text())["clips"]
    assert sorted(clips) == [f"good_{i}" for i in range(5)]
    for n, t in stamps.items():  # finished clips were not redone
        assert (out / "HL-UTT" / f"{n}.npy").stat().st_mtime_ns == t
    assert not list(out.rglob(".*.tmp"))  # no partial file
    from emotion_llama.config import tiny_config
    from emotion_llama.encoders.store import open_store

    f = tiny_config().features
    store = open_store(out, {"local": f.local_dim, "temporal": f.temporal_dim, "audio": f.audio_dim})
    for n in clips:
        feats = store.read(n)
        assert np.isfinite(feats.audio).all() and feats.local.shape == (f.local_dim,)
        assert (out / "first_frames" / f"{n}.jpg").is_file()
        clue = json.loads(store.clue_path(n).read_text())
        assert clue["transcript"]["text"]
    # the same run again has nothing to do and still reports the bad ones
    r = cli(*args)
    assert "5 already done, 0 written, 5 failed" in " ".join(r.stdout.split())


def test_extracted_authors_folder_is_a_benchmark_folder(videos, tmp_path, tiny_config):
    """video -> extract (authors' layout) -> evaluate: the features feed the model unchanged."""
    from emotion_llama.evaluate.runner import (
        get_benchmark,
        model_predict_fn,
        read_predictions,
        run_predictions,
    )
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained
    from emotion_llama.perception.extract import extract_folder

    src = tmp_path / "videos"
    src.mkdir()
    for i in range(2):
        shutil.copy(videos / f"good_{i}.mp4", src / f"sample_{i}.mp4")
    out = tmp_path / "MER"
    summary = extract_folder(src, out, tiny_config, layout="authors", workers=1, progress=False)
    assert summary.written == 2 and not summary.failed
    (out / "labels.txt").write_text("sample_0 60 angry 0.1\nsample_1 60 happy 0.5\n")
    (out / "subtitles.csv").write_text(
        f'name,sentence\nsample_0,"{SENTENCES[0]}"\nsample_1,"{SENTENCES[1]}"\n'
    )
    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    bench = get_benchmark("mer2023")
    run = run_predictions(
        bench, out, tmp_path / "eval", model_predict_fn(ckpt, bench, max_new_tokens=3), progress=False
    )
    assert run.predicted == 2 and not run.skipped
    assert [r["gold"] for r in read_predictions(tmp_path / "eval" / "predictions.jsonl")] == [
        "angry",
        "happy",
    ]


def test_a_one_frame_clip_still_yields_features(videos, tmp_path, tiny_config):
    from emotion_llama.perception.extract import extract_folder

    src = tmp_path / "v"
    src.mkdir()
    _run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-i",
            str(videos / "good_0.mp4"),
            "-frames:v",
            "1",
            "-t",
            "0.05",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            str(src / "one.mp4"),
        ]
    )
    s = extract_folder(src, tmp_path / "f", tiny_config, workers=1, progress=False)
    assert s.written == 1 and not s.failed


def test_perception_decodes_once_what_the_separate_readers_give(videos, tiny_config):
    from emotion_llama.media.audio import load_audio
    from emotion_llama.media.video import iter_frames
    from emotion_llama.perception.pipeline import STAGES, Perceiver

    path = videos / "good_2.mp4"
    p_cfg = tiny_config.perception
    with Perceiver(p_cfg, frame="middle", threads=1) as perceiver:
        start = time.perf_counter()
        p = perceiver(path)
        wall = time.perf_counter() - start
    # one pass over the file: the same audio and frames as reading them separately
    assert np.array_equal(p.audio, load_audio(path, p_cfg.sample_rate))
    frames = list(iter_frames(path, fps=p_cfg.analysis_fps))
    assert p.timeline.times.tolist() == [f.time_s for f in frames]
    middle = next(f for f in frames if f.time_s + 1e-6 >= p.info["duration_s"] / 2)
    assert p.global_frame_time == middle.time_s and np.array_equal(p.global_frame, middle.rgb)
    # where the time went: every stage, adding up to the call
    assert set(p.stage_s) == set(STAGES) and 0 < sum(p.stage_s.values()) <= wall
    assert p.stage_s["faces"] > 0 and p.stage_s["asr"] > 0 and p.stage_s["decode"] > 0
    assert p.detector_runs == p.face_choice["frames_analysed"]  # a real video: every frame differs
    assert "audio" not in json.dumps(p.record().get("missing"))
