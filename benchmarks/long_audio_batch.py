"""One long video in a batch of short clips: batched audio padded to the longest clip (what
``extract --batch-encoders`` did) against the capped forwards of
``emotion_llama.perception.pipeline.audio_groups`` (shorter clips together, the long one alone),
and against each clip alone, all in the same run.

What is timed is ``emotion_llama.perception.pipeline.encode`` on one batch of ``--batch`` clips:
``--batch - 1`` clips of ``--short-s`` seconds of audio and one of ``--long-s``. Each row gives
clips/s, its ratio to the first row, the samples its largest audio forward held (what its memory
grows with) and the least cosine of its features to the clip-by-clip ones.

    PYTHONPATH=src python benchmarks/long_audio_batch.py --tiny      # CPU, tiny encoders, seconds
    PYTHONPATH=src python benchmarks/long_audio_batch.py             # GPU, paper sizes
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from extract_encoders import build, clips, least_cosine
from timing import median_seconds, write_json

import emotion_llama.perception.pipeline as pipeline
from emotion_llama.config import paper_config, tiny_config
from emotion_llama.encoders.models import AudioEncoder, prepare_encoders


@dataclass
class Row:
    variant: str
    clips_per_s: float
    largest_forward_samples: int
    least_cosine: float


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny encoders on the CPU")
    ap.add_argument("--batch", type=int, default=8, help="clips in the batch (extract --batch-size)")
    ap.add_argument("--short-s", type=float, default=3.0, help="audio of the short clips")
    ap.add_argument("--long-s", type=float, default=None, help="audio of the long one (tiny: 120, GPU: 600)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    use_cuda = torch.cuda.is_available() and not args.tiny
    if not use_cuda and not args.tiny:
        sys.exit("no CUDA device: run with --tiny on the CPU")
    device = "cuda" if use_cuda else "cpu"
    dev = torch.device(device)
    cfg = tiny_config() if args.tiny else paper_config()
    encoders = build(cfg, args.tiny, dev)
    if use_cuda:
        encoders = prepare_encoders(encoders, device, torch.bfloat16)
    todo = clips(cfg, args.batch, args.short_s)
    long_s = args.long_s or (120.0 if args.tiny else 600.0)
    rng = np.random.default_rng(1)
    wave = (0.1 * rng.standard_normal(int(cfg.perception.sample_rate * long_s))).astype(np.float32)
    todo[3] = replace(todo[3], name="long", audio=wave)

    largest = [0]
    forward = AudioEncoder.forward

    def spy(self: AudioEncoder, waveforms: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
        largest[0] = max(largest[0], int(waveforms.numel()))
        return forward(self, waveforms, attention_mask)

    AudioEncoder.forward = spy  # type: ignore[method-assign]
    capped = pipeline.audio_groups
    variants = [
        ("each clip alone (--clip-by-clip)", False, capped),
        ("batched, padded to the longest (before)", True, lambda n: [list(range(len(n)))]),
        ("batched, capped forwards (now)", True, capped),
    ]
    print(
        f"device: {device}; {args.batch} clips: {args.batch - 1} of {args.short_s:g} s, one of {long_s:g} s"
    )
    print(f"{'variant':<42}{'clips/s':>9}{'x first':>9}{'largest fwd':>13}{'least cos':>11}")
    rows: list[Row] = []
    reference: list[Any] = []
    t0 = time.perf_counter()
    for name, batched, groups in variants:
        pipeline.audio_groups = groups  # type: ignore[assignment]

        def once(batched: bool = batched) -> list[Any]:
            return pipeline.encode(todo, encoders, device=device, batched=batched)

        largest[0] = 0
        feats = once()
        seconds = median_seconds(once, dev, args.repeats, 0)
        reference = reference or feats
        row = Row(name, len(todo) / seconds, largest[0], least_cosine(reference, feats))
        rows.append(row)
        ratio = row.clips_per_s / rows[0].clips_per_s
        print(
            f"{name:<42}{row.clips_per_s:>9.2f}{ratio:>8.2f}x{row.largest_forward_samples:>13,}"
            f"{row.least_cosine:>11.5f}",
            flush=True,
        )
        write_json(args.json, {"device": device, "rows": [asdict(r) for r in rows]})
    pipeline.audio_groups = capped  # type: ignore[assignment]
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
