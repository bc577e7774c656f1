"""The dataset builder and analyze on real media, with the offline LLM served over the OpenAI
protocol on loopback (a real server and the project's real client). Slow."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.media.samples import make_speaking_clip, real_media_dir

pytestmark = pytest.mark.slow

SENTENCES = [
    "This is the best day of my whole life.",
    "I cannot believe you did that to me.",
    "Please leave me alone for a while.",
    "What a wonderful surprise this is.",
]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _media() -> Path:
    try:
        return real_media_dir()
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    data = _media()
    root = tmp_path_factory.mktemp("clips")
    face = data / "WolfgangLanger_Pexels.mp4"
    try:
        for i, text in enumerate(SENTENCES):
            make_speaking_clip(face, text, root / f"clip_{i}.mp4", start=2.5 * i, seconds=2.5)
        make_speaking_clip(
            data / "no_face.mp4", "There is nobody in this room.", root / "noface.mp4", seconds=2.0
        )
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    # only silence: the real clip's own (silent) audio track
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-ss",
            "12",
            "-t",
            "2",
            "-i",
            str(face),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            str(root / "silence.mp4"),
        ],
        check=True,
    )
    return root


@pytest.fixture(scope="module")
def llm_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "emotion_llama.cli", "serve-llm", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if json.loads(r.read())["status"] == "ok":
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("serve-llm did not come up")
    yield f"{url}/v1"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


def test_openai_package_and_our_client_talk_to_the_served_llm(llm_server):
    from emotion_llama.backends.llm import ChatParams, OpenAIChatLLM

    ours = OpenAIChatLLM(llm_server, "offline", max_concurrency=2)
    answers = ours.chat_many(
        [[{"role": "user", "content": "What is the capital of France?"}]] * 2, ChatParams(max_tokens=12)
    )
    assert all("paris" in a.lower() for a in answers)
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=llm_server, api_key="unused")
    reply = client.chat.completions.create(
        model="offline",
        max_tokens=12,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert "paris" in reply.choices[0].message.content.lower()


def cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "emotion_llama.cli", *args], capture_output=True, text=True, env=ENV, **kw
    )


def test_annotate_kill_rerun_cache_and_schema(videos, llm_server, tmp_path):
    from emotion_llama.annotate.export import validate_record

    out = tmp_path / "dataset"
    args = [
        "annotate",
        str(videos),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--workers",
        "1",
        "--llm",
        f"openai:offline@{llm_server}",
        # short reasoning: this test is about the kill, the rerun and the cache, not the text
        "--max-new-tokens",
        "64",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "emotion_llama.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "work").glob("*.json"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.name for p in (out / "work").glob("*.json")}
    assert 2 <= len(first) < 6
    r = cli(*args, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"6 videos: {6 - len(first)} perceived now" in " ".join(r.stdout.split())
    records = sorted((out / "records").glob("*.json"))
    assert [p.stem for p in records] == sorted(v.stem for v in videos.glob("*.mp4"))  # each once
    assert not list(out.rglob(".*.tmp"))
    recs = {p.stem: json.loads(p.read_text()) for p in records}
    for rec in recs.values():
        validate_record(rec)
    assert any(m.startswith("face:") for m in recs["noface"]["missing"])
    assert recs["noface"]["subtitle"]  # the speech still comes through
    assert any(m.startswith(("speech:", "audio:")) for m in recs["silence"]["missing"])
    assert recs["silence"]["subtitle"] == "" and recs["silence"]["audio_tone"] is None
    assert recs["clip_0"]["visual_expression"] and recs["clip_0"]["caption"].startswith(
        "The person's expression"
    )
    for f in (
        "merr_coarse.json",
        "merr_fine.json",
        "labels.txt",
        "subtitles.csv",
        "chat.jsonl",
        "report.md",
        "report.html",
    ):
        assert (out / f).is_file(), f
    coarse = json.loads((out / "merr_coarse.json").read_text())
    assert "caption" in coarse["clip_0"]
    # a rerun of the LLM stage costs nothing: every answer comes from the cache
    for p in records:
        p.unlink()
    r = cli(*args, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "0 new answers" in r.stdout and "LLM cache: 0 hits" not in r.stdout
    assert {
        p.stem: json.loads(p.read_text())["smp_reason_caption"] for p in (out / "records").glob("*.json")
    } == {k: v["smp_reason_caption"] for k, v in recs.items()}


def test_analyze_clue_pipeline_and_full_model(videos, tmp_path, tiny_config):
    r = cli(
        "analyze",
        str(videos / "clip_0.mp4"),
        "--json",
        str(tmp_path / "a.json"),
        "--preset",
        "tiny",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "a.json").read_text())
    assert res["label"] in (
        "happy",
        "neutral",
        "angry",
        "sad",
        "worried",
        "surprise",
        "fear",
        "contempt",
        "doubt",
    )
    # the video's first 2.5 s: she cries, eyes shut and brows knit (the cry face, not a smile)
    assert res["clues"]["peak_AU_list"] and "AU12" not in res["clues"]["peak_AU_list"]
    assert "eyes closed" in res["clues"]["visual_prior_list"]
    assert "best day" in res["clues"]["subtitle"].lower()
    # the happy words disagree with the crying face: flagged
    assert res["clues"]["conflict"] and "words say happy" in res["clues"]["conflict_reason"]
    assert (tmp_path / "a.au.png").read_bytes()[:4] == b"\x89PNG"
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained

    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    r = cli(
        "analyze",
        str(videos / "clip_1.mp4"),
        str(videos / "clip_2.mp4"),
        "--model",
        str(ckpt),
        "--json",
        str(tmp_path / "m.json"),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    both = json.loads((tmp_path / "m.json").read_text())
    assert [b["name"] for b in both] == ["clip_1", "clip_2"]
    assert all("model_answer" in b["clues"] for b in both)
    # the second clip costs no reload: its timings hold perception, encoders and model only
    assert set(both[1]["timings_s"]) == {"perception", "clues", "encoders", "model"}


@pytest.mark.parametrize(
    ("picture", "label", "phrases"),
    [
        ("0-f15-hao-ph.jpg", "happy", {"lip corner puller", "cheek raiser"}),
        ("0-f1-su-ph.jpg", "surprise", {"inner brow raiser", "jaw drop"}),
    ],
)
def test_posed_faces_give_phrases_and_candidate_labels(picture, label, phrases):
    import numpy as np
    from PIL import Image

    from emotion_llama.annotate.clues import candidate_labels
    from emotion_llama.perception.action_units import aus_from_blendshapes, expression_phrases
    from emotion_llama.perception.faces import MediaPipeFaceAnalyzer

    with Image.open(_media() / picture) as im:
        rgb = np.asarray(im.convert("RGB"))
    with MediaPipeFaceAnalyzer() as faces:
        found = faces.detect(rgb)
    aus = aus_from_blendshapes(found[0].blendshapes)
    assert phrases <= set(expression_phrases(aus))
    assert label in [lab for lab, _ in candidate_labels(aus)]


def test_annotated_folder_with_features_is_a_benchmark_folder(videos, tmp_path, tiny_config):
    import shutil

    from emotion_llama.annotate.pipeline import AnnotateOptions, annotate_folder
    from emotion_llama.evaluate.runner import (
        get_benchmark,
        model_predict_fn,
        read_predictions,
        run_predictions,
    )
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained

    src = tmp_path / "videos"
    src.mkdir()
    for name in ("clip_0", "clip_1"):
        shutil.copy(videos / f"{name}.mp4", src / f"{name}.mp4")
    out = tmp_path / "dataset"
    s = annotate_folder(
        src,
        out,
        tiny_config,
        AnnotateOptions(
            workers=1, progress=False, with_features=True, labels={"clip_0": "happy", "clip_1": "angry"}
        ),
    )
    assert not s.failed
    assert (out / "HL-UTT" / "clip_0.npy").is_file() and (out / "first_frames" / "clip_0.jpg").is_file()
    assert (out / "frames" / "clip_0.jpg").is_file()  # the peak-frame thumbnail, separate
    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    bench = get_benchmark("mer2023")
    run = run_predictions(
        bench, out, tmp_path / "eval", model_predict_fn(ckpt, bench, max_new_tokens=3), progress=False
    )
    assert run.predicted == 2 and not run.skipped
    recs = read_predictions(tmp_path / "eval" / "predictions.jsonl")
    assert {r["name"]: r["gold"] for r in recs} == {"clip_0": "happy", "clip_1": "angry"}
