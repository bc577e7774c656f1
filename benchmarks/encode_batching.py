"""The cost of batch-independent features: ``perception.pipeline.encode`` (each clip alone through
each encoder, its audio at its own length) against the batched forwards it replaced (the B
clips' temporal frames in one VideoMAE call, their audio padded into one HuBERT call; the local
encoder was already one call per clip), on the same clips in the same run.

Per encoder: ms per clip for both ways (median of ``--repeats`` after one warm-up, the two
timed in alternation so that a loaded machine slows both alike), the per-clip/batched time
ratio, and the largest difference between a clip's vector from the batched call and from a call
on that clip alone (the defect: any non-zero value makes a resumed ``extract`` differ from an
uninterrupted one). Inputs are random crops and noise of different lengths (decoding and
perception are not timed).

    PYTHONPATH=src python benchmarks/encode_batching.py --threads 1      # tiny preset, seconds
    PYTHONPATH=src python benchmarks/encode_batching.py --paper --clips 4 --size 112 --local-frames 4

``--paper``: the default encoders' architectures (MAE ViT-L/16, VideoMAE ViT-L/16 on 16 frames,
HuBERT-large) with random weights, since their checkpoints cannot be downloaded here; ``--size``
and ``--local-frames`` shrink the crops to keep CPU runs short (the paper: 224 px, 16 crops).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from emotion_llama.encoders.models import Encoders, pad_waveforms, preprocess_frames
from emotion_llama.perception.pipeline import Perception, encode

NAMES = ("local", "temporal", "audio")


def make_clips(n: int, size: int, local: int, temporal: int, seconds: float, seed: int) -> list[Perception]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        samples = int(seconds * 16000 * rng.uniform(0.7, 1.0))
        empty: dict[str, Any] = dict.fromkeys(
            ("timeline", "peak", "peak_time", "transcript", "global_frame", "peak_frame")
        )
        out.append(
            Perception(
                name=f"clip_{i}",
                source="",
                info={},
                face_choice={},
                global_frame_time=None,
                local_crops=rng.integers(0, 256, (local, size, size, 3), dtype=np.uint8),
                temporal_crops=rng.integers(0, 256, (temporal, size, size, 3), dtype=np.uint8),
                audio=(0.1 * rng.standard_normal(samples)).astype(np.float32),
                **empty,
            )
        )
    return out


def tiny_encoders() -> Encoders:
    from emotion_llama.config import tiny_config
    from emotion_llama.encoders.models import build_encoders

    return build_encoders(tiny_config())


def paper_encoders(size: int) -> Encoders:
    from transformers import HubertModel, VideoMAEModel, ViTMAEModel

    from emotion_llama.encoders.models import (
        AudioEncoder,
        LocalEncoder,
        TemporalEncoder,
        large_hubert_config,
        large_mae_config,
        large_videomae_config,
    )

    def random(cls: Any, config: Any, seed: int) -> Any:
        with torch.device("meta"):  # seeded small weights without the slow default init
            model = cls(config)
        model.to_empty(device="cpu")
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, t in model.named_parameters():
                if t.ndim > 1:
                    t.normal_(0.0, 0.02, generator=g)
                else:
                    t.fill_(1.0 if name.endswith("weight") else 0.0)
        return model.eval().requires_grad_(False)

    return Encoders(
        local=LocalEncoder(random(ViTMAEModel, large_mae_config(size), 0)),
        temporal=TemporalEncoder(random(VideoMAEModel, large_videomae_config(size), 1)),
        audio=AudioEncoder(random(HubertModel, large_hubert_config(), 2), do_normalize=True),
    )


def batched(clips: list[Perception], enc: Encoders) -> dict[str, Callable[[], torch.Tensor]]:
    """The replaced way, one callable per encoder over all the clips: (B, D) each."""
    faces = [preprocess_frames(c.local_crops) for c in clips]
    frames = torch.stack([preprocess_frames(c.temporal_crops) for c in clips])
    waves, mask = pad_waveforms([c.audio for c in clips])
    return {
        "local": lambda: torch.stack([enc.local.encode_clip(f) for f in faces]),
        "temporal": lambda: enc.temporal(frames),
        "audio": lambda: enc.audio(waves, mask),
    }


def per_clip(clips: list[Perception], enc: Encoders) -> dict[str, Callable[[], torch.Tensor]]:
    """What ``encode`` now does, encoder by encoder (``encode`` itself is timed as a whole too)."""
    faces = [preprocess_frames(c.local_crops) for c in clips]
    frames = [preprocess_frames(c.temporal_crops) for c in clips]
    waves = [c.audio for c in clips]
    return {
        "local": lambda: torch.stack([enc.local.encode_clip(f) for f in faces]),
        "temporal": lambda: torch.stack([enc.temporal.encode_clip(f) for f in frames]),
        "audio": lambda: torch.stack([enc.audio.encode_clip(w) for w in waves]),
    }


def seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def paired_medians(a: Callable[[], Any], b: Callable[[], Any], repeats: int) -> tuple[float, float, Any, Any]:
    """Median seconds of ``a`` and of ``b`` timed in alternation (a shared, loaded machine slows
    both alike), after one warm-up call each, and their results."""
    with torch.inference_mode():
        out_a, out_b = a(), b()
        ta, tb = [], []
        for _ in range(repeats):
            ta.append(seconds(a))
            tb.append(seconds(b))
    return statistics.median(ta), statistics.median(tb), out_a, out_b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper", action="store_true", help="paper-size architectures, random weights")
    ap.add_argument("--clips", type=int, default=8, help="clips per batch (extract's default: 8)")
    ap.add_argument("--size", type=int, default=None, help="crop size (tiny: 32, paper: 224)")
    ap.add_argument("--local-frames", type=int, default=None, help="local crops per clip")
    ap.add_argument("--seconds", type=float, default=5.0, help="longest audio, seconds")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--encoders", default=",".join(NAMES), help="comma-separated subset to time")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--encode", action="store_true", help="also time `encode` itself")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.paper:
        size, local, temporal = a.size or 224, a.local_frames or 16, 16
        enc = paper_encoders(size)
    else:
        size, local, temporal = a.size or 32, a.local_frames or 4, 4
        enc = tiny_encoders()
    clips = make_clips(a.clips, size, local, temporal, a.seconds, seed=0)
    label = "paper-size (random weights)" if a.paper else "tiny"
    lengths = [c.audio.size / 16000 for c in clips]
    print(
        f"{label}: {a.clips} clips, {local} local crops + {temporal} frames of {size} px, "
        f"audio {min(lengths):.2f}-{max(lengths):.2f} s, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    old, new = batched(clips, enc), per_clip(clips, enc)
    with torch.inference_mode():
        alone = {n: torch.stack([per_clip([c], enc)[n]()[0] for c in clips]) for n in a.encoders.split(",")}
    print("\n| encoder | batched ms/clip | per-clip ms/clip | per-clip / batched | batched vs alone |")
    print("|---|---|---|---|---|")
    tot_old = tot_new = 0.0
    for n in a.encoders.split(","):
        t_old, t_new, out_old, out_new = paired_medians(old[n], new[n], a.repeats)
        assert torch.equal(out_new, alone[n])
        tot_old, tot_new = tot_old + t_old, tot_new + t_new
        diff = float((out_old - alone[n]).abs().max())
        ms = 1e3 / a.clips
        print(f"| {n} | {t_old * ms:.2f} | {t_new * ms:.2f} | {t_new / t_old:.2f}x | {diff:.3g} |")
    ms = 1e3 / a.clips
    print(f"| total | {tot_old * ms:.2f} | {tot_new * ms:.2f} | {tot_new / tot_old:.2f}x | |")
    if a.encode:
        with torch.inference_mode():
            encode(clips, enc)
            t = statistics.median(seconds(lambda: encode(clips, enc)) for _ in range(a.repeats))
        print(f"\n`encode` on the {a.clips} clips (preprocessing included): {t * ms:.2f} ms/clip")


if __name__ == "__main__":
    main()
