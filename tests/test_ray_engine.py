"""``--engine ray`` on a real Ray cluster on loopback, started by the test: a head node and a
second (worker) node of one CPU each (``ray.cluster_utils.Cluster``: real raylets, real worker
processes). extract and annotate on real clips write byte for byte what the local engine writes;
killing the worker node mid-run loses nothing. Slow (real face and speech models)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emotion_llama.errors import EmotionLlamaError
from helpers import failure_rows, tree_bytes

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'emotion-llama[ray]')")

SENTENCES = [
    "This is the best day of my whole life.",
    "Please leave me alone for a while.",
    "What a wonderful surprise this is.",
    "I cannot believe you did that to me.",
]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Three short real clips (a face, a spoken sentence) and a file that is not a video."""
    from emotion_llama.media.samples import make_speaking_clip, real_media_dir

    root = tmp_path_factory.mktemp("ray_clips")
    try:
        face = real_media_dir() / "WolfgangLanger_Pexels.mp4"
        for i, text in enumerate(SENTENCES[:3]):
            make_speaking_clip(face, text, root / f"clip_{i}.mp4", start=2.0 * i, seconds=1.5)
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    (root / "broken.mp4").write_text("this is not a video\n")
    return root


@pytest.fixture(scope="module")
def cluster():
    """A head and one more node, one CPU each, on loopback; shut down at the end."""
    from ray.cluster_utils import Cluster

    # the head's GPU is a logical resource only (no test runs a GPU task; the plans may name it)
    head = {"num_cpus": 1, "num_gpus": 1, "include_dashboard": False}
    c = Cluster(initialize_head=True, head_node_args=head)
    worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c, worker
    finally:
        c.shutdown()


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emotion_llama.cli", *args],
        capture_output=True, text=True, env=ENV, timeout=timeout,
    )  # fmt: skip


def extract_args(videos: Path, out: Path) -> list[str]:
    return ["extract", str(videos), "--preset", "tiny", "--layout", "authors", "--out", str(out)]


@pytest.fixture(scope="module")
def local_extract(videos, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The local engine's features of the clips (two worker processes), the reference."""
    out = tmp_path_factory.mktemp("local_extract") / "features"
    return out, cli(*extract_args(videos, out), "--workers", "2")


def test_extract_on_the_cluster_equals_the_local_engine(videos, cluster, local_extract, tmp_path):
    c, _ = cluster
    reference, local = local_extract
    remote = cli(*extract_args(videos, tmp_path / "ray"), "--engine", "ray", "--address", c.address)
    for r in (local, remote):  # the broken file fails alone, in both
        assert r.returncode == 1, r.stdout + r.stderr
        assert "4 videos: 0 already done, 3 written, 1 failed" in " ".join(r.stdout.split())
    assert failure_rows(remote.stderr) == failure_rows(local.stderr) != []
    got, want = tree_bytes(tmp_path / "ray"), tree_bytes(reference)
    assert sorted(got) == sorted(want) and len(want) == 3 * 5 + 1  # 3 vectors, frame, clues; manifest
    assert got == want
    # either engine finishes what the other started: the local engine finds nothing left to do
    again = cli(*extract_args(videos, tmp_path / "ray"), "--workers", "1")
    assert "3 already done, 0 written, 1 failed" in " ".join(again.stdout.split())


def test_encoder_actors_on_the_cluster_equal_the_local_engine(videos, cluster, local_extract, tmp_path):
    """--encoder-actors 1: the encoders in a CPU actor of the cluster (one thread), not in the
    driver. Clip by clip and batched (--batch-size 2: a batch of two and one of one, through Ray
    Data's numpy batches) they write the local engine's vectors within float rounding (another
    thread count rounds a reduction differently) and its other files byte for byte."""
    c, _ = cluster
    reference, _ = local_extract
    want = tree_bytes(reference)
    vectors = [k for k in want if k.endswith(".npy")]
    assert len(vectors) == 9
    actors = ["--engine", "ray", "--address", c.address, "--encoder-actors", "1"]
    runs = (("alone", [], 1e-6), ("batched", ["--batch-encoders", "--batch-size", "2"], 2e-5))
    for name, extra, atol in runs:
        r = cli(*extract_args(videos, tmp_path / name), *actors, *extra)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "4 videos: 0 already done, 3 written, 1 failed" in " ".join(r.stdout.split()), r.stderr
        got = tree_bytes(tmp_path / name)
        assert sorted(got) == sorted(want)
        for k in want:
            if k in vectors:
                a, b = (np.load(root / k) for root in (tmp_path / name, reference))
                np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=f"{name} {k}")
            elif k != "manifest.json":  # it holds the vectors' checksums
                assert got[k] == want[k], k
        encoding = json.loads(got["manifest.json"])["encoding"]
        assert encoding == {"dtype": "float32", "fp8": False, "batched": name == "batched"}


def test_perception_is_not_fused_into_the_encoder_actors(cluster, videos, tiny_config, capsys):
    """Ray Data fuses a map into the next actor stage when their resources match; the clips must
    stay CPU tasks on every node and only the encoding run in the actors, on the CPU (a memory
    reservation tells the two apart) as on a GPU. More actors than GPUs is refused."""
    from emotion_llama.perception.ray_engine import _dataset
    from emotion_llama.perception.workers import EncodeSpec, Engine

    c, _ = cluster
    ray.init(address=c.address)
    try:
        clips = sorted(videos.glob("clip_*.mp4"))
        for spec, actors in ((EncodeSpec(tiny_config), 2), (EncodeSpec(tiny_config, device="cuda"), 0)):
            engine = Engine(kind="ray", address=c.address, encoder_actors=actors)
            _dataset(ray, clips, tiny_config.perception, "first", {}, engine, spec, False, 8).explain()
            plan = capsys.readouterr().out.split("Physical Plan (Optimized)")[1]
            assert "ActorPoolMapOperator[MapBatches(_Encoders)]" in plan, spec.device
            assert "TaskPoolMapOperator[Map(_perceive_row)]" in plan, spec.device
        engine = Engine(kind="ray", address=c.address, encoder_actors=2)
        with pytest.raises(EmotionLlamaError, match="has 1 GPU"):
            _dataset(ray, clips, tiny_config.perception, "first", {}, engine, spec, False, 8)
    finally:
        ray.shutdown()


def test_annotate_on_the_cluster_equals_the_local_engine(videos, cluster, tmp_path):
    """Stage 1 (perception, clues, captions) on the cluster; the LLM stage in the driver. The ray
    run starts from the local run's answer cache, so equal clues ask the LLM nothing new (the
    answers are not what the engine changes); only that cache file is left out of the comparison."""
    c, _ = cluster
    base = ["annotate", str(videos), "--preset", "tiny", "--max-new-tokens", "24"]
    local = cli(*base, "--out", str(tmp_path / "local"), "--workers", "2")
    assert local.returncode == 1, local.stdout + local.stderr
    (tmp_path / "ray").mkdir()
    shutil.copy(tmp_path / "local" / "llm_cache.sqlite", tmp_path / "ray" / "llm_cache.sqlite")
    remote = cli(*base, "--out", str(tmp_path / "ray"), "--engine", "ray", "--address", c.address)
    assert remote.returncode == 1, remote.stdout + remote.stderr
    assert "4 videos: 3 perceived now, 3 reasoned now, 1 failed" in " ".join(remote.stdout.split())
    assert ", 0 new answers" in remote.stdout, remote.stdout  # the same prompts: the same clues
    assert failure_rows(remote.stderr) == failure_rows(local.stderr) != []
    skip = ("llm_cache.sqlite",)
    got, want = tree_bytes(tmp_path / "ray", skip=skip), tree_bytes(tmp_path / "local", skip=skip)
    assert sorted(got) == sorted(want)
    assert {"records/clip_0.json", "work/clip_2.json", "merr_fine.json", "report.html"} <= set(want)
    assert got == want


def test_evaluate_answers_in_ray_actors_as_locally(cluster, local_extract, tmp_path, tiny_config):
    """The model in a Ray actor on the cluster: the same predictions as the local run."""
    from emotion_llama.evaluate.runner import read_predictions
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained

    c, _ = cluster
    data = tmp_path / "MER"
    shutil.copytree(local_extract[0], data)
    (data / "labels.txt").write_text("clip_0 60 happy\nclip_1 60 sad\nclip_2 60 surprise\n")
    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    base = ["evaluate", "-b", "mer2023", "-m", str(ckpt), "-d", str(data), "--max-new-tokens", "3"]
    base += ["--batch-size", "2"]
    local = cli(*base, "-o", str(tmp_path / "local"))
    remote = cli(*base, "-o", str(tmp_path / "ray"), "--engine", "ray", "--address", c.address)
    assert local.returncode == remote.returncode == 0, remote.stdout + remote.stderr
    assert "3 clips: 0 already done, 3 predicted now, 0 skipped" in " ".join(remote.stdout.split())

    def by_name(path: Path) -> dict[str, dict]:
        return {r.pop("name"): (r.pop("_line"), r)[1] for r in read_predictions(path)}

    ray_dir, local_dir = tmp_path / "ray", tmp_path / "local"
    assert by_name(ray_dir / "predictions.jsonl") == by_name(local_dir / "predictions.jsonl")
    metrics = (ray_dir / "metrics.json").read_text().replace(str(ray_dir), str(local_dir))
    assert metrics == (local_dir / "metrics.json").read_text()  # the same scores, model name and all


def test_a_killed_worker_node_loses_nothing(videos, cluster, local_extract, tmp_path):
    """The worker node's raylet and workers are killed (no graceful exit) once the first clip is
    written: Ray retries its clips on the head node, or a rerun finishes exactly what is missing;
    no partial file either way, and the result equals the local engine's."""
    c, worker = cluster
    out = tmp_path / "ray"
    args = [*extract_args(videos, out), "--engine", "ray", "--address", c.address]
    proc = subprocess.Popen(
        [sys.executable, "-m", "emotion_llama.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    manifest = out / "manifest.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(manifest.read_text()).get("clips"):
                break
        except (OSError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the node could be killed"
    c.remove_node(worker, allow_graceful=False)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"the run hung after its worker node died:\n{stderr[-3000:]}")
    assert not list(out.rglob("*.tmp"))  # no partial file
    done = json.loads(manifest.read_text())["clips"]
    stamps = {n: (out / "HL-UTT" / f"{n}.npy").stat().st_mtime_ns for n in done}
    rerun = cli(*extract_args(videos, out), "--workers", "1")
    summary = " ".join(rerun.stdout.split())
    assert f"4 videos: {len(done)} already done, {3 - len(done)} written, 1 failed" in summary, (
        stdout + stderr + rerun.stdout + rerun.stderr
    )
    assert all((out / "HL-UTT" / f"{n}.npy").stat().st_mtime_ns == t for n, t in stamps.items())
    assert tree_bytes(out) == tree_bytes(local_extract[0])
    c.add_node(num_cpus=1)  # for any later test of the module
