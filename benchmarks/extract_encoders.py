"""Clips per second through ``extract``'s three encoders as the command runs them, each way it can.

What is timed is ``emotion_llama.perception.pipeline.encode``, the function ``extract`` calls: uint8
face crops and frames and float32 waveforms on the host in, float32 feature vectors on the host out
(preprocessing, the copies to the device and back included; decoding and face analysis not). The
encoders are prepared by ``emotion_llama.encoders.models.prepare_encoders``, the code behind
``extract --dtype/--fp8/--compile``, on randomly initialised models of the preset's sizes (paper:
MAE ViT-L/16 on 16 crops of 224 px, VideoMAE ViT-L/16 on 16 frames, HuBERT-large on 8-10 s of
audio, so a batch pads).

Rows, all in the same run, against the first:

* float32, clip by clip: what ``extract`` did before it had these options (and its CPU default);
* the device's default dtype (bfloat16 on a CUDA GPU), clip by clip, then batched (the GPU default);
* batched with FP8 matmuls (``--fp8``), and with compiled blocks (``--compile``, if asked).

Each row also gives the least cosine, over clips and encoders, of its features to the first row's
(a speed-up only counts with features that hold).

    PYTHONPATH=src python benchmarks/extract_encoders.py                 # GPU, paper sizes, ~1 min
    PYTHONPATH=src python benchmarks/extract_encoders.py --tiny          # CPU, tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from timing import median_seconds, write_json
from transformers import HubertModel, VideoMAEModel, ViTMAEModel

from emotion_llama.config import EmotionLlamaConfig, paper_config, tiny_config
from emotion_llama.encoders.models import (
    AudioEncoder,
    Encoders,
    LocalEncoder,
    TemporalEncoder,
    large_hubert_config,
    large_mae_config,
    large_videomae_config,
    prepare_encoders,
    tiny_hubert_config,
    tiny_mae_config,
    tiny_videomae_config,
)
from emotion_llama.perception.pipeline import Perception, encode
from emotion_llama.precision import resolve_dtype

PARTS = ("local", "temporal", "audio")


@dataclass
class Row:
    variant: str
    dtype: str
    batched: bool
    clips_per_s: float
    least_cosine: float
    note: str = ""


def build(cfg: EmotionLlamaConfig, tiny: bool, device: torch.device) -> Encoders:
    """The three encoders with seeded random weights, initialised on ``device``, in float32."""
    f, p = cfg.features, cfg.perception
    torch.manual_seed(0)
    with device:
        if tiny:
            local = ViTMAEModel(tiny_mae_config(f.local_dim, p.face_size))
            temporal = VideoMAEModel(tiny_videomae_config(f.temporal_dim, p.face_size, p.temporal_frames))
            audio = HubertModel(tiny_hubert_config(f.audio_dim))
        else:
            local = ViTMAEModel(large_mae_config(p.face_size))
            temporal = VideoMAEModel(large_videomae_config(p.face_size, p.temporal_frames))
            audio = HubertModel(large_hubert_config())
    return prepare_encoders(
        Encoders(LocalEncoder(local), TemporalEncoder(temporal), AudioEncoder(audio, do_normalize=True)),
        device,
    )


def clips(cfg: EmotionLlamaConfig, n: int, audio_s: float) -> list[Perception]:
    """``n`` clips as perception hands them to ``encode``: uint8 crops, float32 audio of 80-100%
    of ``audio_s`` (different lengths: a batch pads)."""
    p = cfg.perception
    rng = np.random.default_rng(0)
    s = p.face_size
    out = []
    for i in range(n):
        samples = int(p.sample_rate * audio_s * (0.8 + 0.2 * rng.random()))
        crops = rng.integers(0, 256, (p.local_frames, s, s, 3), dtype=np.uint8)
        frames = rng.integers(0, 256, (p.temporal_frames, s, s, 3), dtype=np.uint8)
        wave = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        empty: dict[str, Any] = dict.fromkeys(
            ("timeline", "peak", "peak_time", "transcript", "global_frame", "peak_frame", "global_frame_time")
        )
        perception = Perception(
            name=f"clip_{i}", source=f"clip_{i}.mp4", info={}, face_choice={}, local_crops=crops,
            temporal_crops=frames, audio=wave, **empty,
        )  # fmt: skip
        out.append(perception)
    return out


def run(encoders: Encoders, todo: list[Perception], batch: int, batched: bool, device: str) -> list[Any]:
    """``todo`` through ``encode`` in batches of ``batch``, as ``extract`` hands them over."""
    out: list[Any] = []
    for i in range(0, len(todo), batch):
        out += encode(todo[i : i + batch], encoders, device=device, batched=batched)
    return out


def least_cosine(a: list[Any], b: list[Any]) -> float:
    worst = 1.0
    for x, y in zip(a, b, strict=True):
        for part in PARTS:
            u, v = getattr(x, part), getattr(y, part)
            worst = min(worst, float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-30)))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny encoders on the CPU (checks the script)")
    ap.add_argument("--clips", type=int, default=None, help="clips per timed pass (GPU: 32, tiny: 8)")
    ap.add_argument("--batch", type=int, default=8, help="clips per batch (extract --batch-size)")
    ap.add_argument("--repeats", type=int, default=None, help="timed passes per row (GPU: 3, tiny: 2)")
    ap.add_argument("--audio-s", type=float, default=None, help="longest audio per clip (paper: 10)")
    ap.add_argument("--compile", action="store_true", help="also time --compile (adds the compilation)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="start no new row after this many seconds")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    t_start = time.perf_counter()
    use_cuda = torch.cuda.is_available() and not args.tiny
    if not use_cuda and not args.tiny:
        sys.exit("no CUDA device: run with --tiny to check the script on the CPU")
    device = "cuda" if use_cuda else "cpu"
    dev = torch.device(device)
    cfg = tiny_config() if args.tiny else paper_config()
    todo = clips(cfg, args.clips or (8 if args.tiny else 32), args.audio_s or (1.0 if args.tiny else 10.0))
    repeats = args.repeats or (2 if args.tiny else 3)
    auto = resolve_dtype(None, device, "encoder")
    name = torch.cuda.get_device_name(dev) if use_cuda else "cpu"
    print(f"device: {name}; {len(todo)} clips, batches of {args.batch}; default dtype {auto}", flush=True)
    print(f"{'variant':<40}{'clips/s':>9}{'x first':>9}{'least cos':>11}", flush=True)

    rows: list[Row] = []
    first: list[Any] = []

    def measure(variant: str, encoders: Encoders, dtype: str, batched: bool, note: str = "") -> None:
        nonlocal first
        if time.perf_counter() - t_start > args.budget_s:
            print(f"{variant:<40} skipped: past --budget-s {args.budget_s:.0f}", flush=True)
            return
        feats = run(encoders, todo, args.batch, batched, device)  # also the warm-up
        seconds = median_seconds(lambda: run(encoders, todo, args.batch, batched, device), dev, repeats, 0)
        first = first or feats
        row = Row(variant, dtype, batched, len(todo) / seconds, least_cosine(first, feats), note)
        rows.append(row)
        write_json(
            args.json,
            {"device": name, "clips": len(todo), "rows": [asdict(r) for r in rows], "partial": True},
        )
        ratio = row.clips_per_s / rows[0].clips_per_s
        print(f"{variant:<40}{row.clips_per_s:>9.2f}{ratio:>8.2f}x{row.least_cosine:>11.4f}", flush=True)

    encoders = build(cfg, args.tiny, dev)
    measure("float32, clip by clip (before)", encoders, "float32", False)
    prepare_encoders(encoders, device, getattr(torch, auto))
    measure(f"{auto}, clip by clip", encoders, auto, False)
    measure(f"{auto}, batched" + (f" (the {device} default)" if use_cuda else ""), encoders, auto, True)
    try:
        fp8 = prepare_encoders(build(cfg, args.tiny, dev), device, getattr(torch, auto), fp8=True)
        measure(f"{auto}, batched, --fp8", fp8, auto, True)
        del fp8
    except Exception as exc:  # e.g. a GPU without FP8: the other rows stand
        print(f"{'--fp8':<40} failed: {type(exc).__name__}: {str(exc)[:160]}", flush=True)
    if args.compile:
        compiled = prepare_encoders(build(cfg, args.tiny, dev), device, getattr(torch, auto), compile=True)
        t0 = time.perf_counter()
        run(compiled, todo, args.batch, True, device)
        note = f"first pass (compilation) {time.perf_counter() - t0:.0f} s"
        measure(f"{auto}, batched, --compile", compiled, auto, True, note)
    if use_cuda:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB", flush=True)
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)
    write_json(
        args.json, {"device": name, "clips": len(todo), "rows": [asdict(r) for r in rows], "partial": False}
    )


if __name__ == "__main__":
    main()
