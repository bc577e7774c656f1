"""The dataset builder on the CPU with the offline LLM: clips per minute and the share of time per
stage, against the same stages run one clip at a time without caching or batching, in one run;
and ``analyze`` on a 10-second clip once its models are loaded.

    python benchmarks/annotate_cpu.py [--clips 6] [--seconds 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from emotion_llama.media.samples import SAMPLE_SENTENCES as SENTENCES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from emotion_llama.annotate.pipeline import AnnotateOptions, annotate_folder, clue_record, reason_records
    from emotion_llama.backends.llm import make_llm
    from emotion_llama.config import tiny_config
    from emotion_llama.media.samples import make_speaking_clip, real_media_dir
    from emotion_llama.perception.pipeline import Perceiver
    from emotion_llama.serve.predictor import Predictor

    face = real_media_dir() / "WolfgangLanger_Pexels.mp4"
    cfg = tiny_config()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        videos = root / "videos"
        clips = [
            make_speaking_clip(
                face,
                SENTENCES[i % len(SENTENCES)],
                videos / f"clip_{i:02d}.mp4",
                start=(2.0 * i) % 14,
                seconds=args.seconds,
            )
            for i in range(args.clips)
        ]
        ten = make_speaking_clip(face, " ".join(SENTENCES[:3]), root / "ten.mp4", start=0.0, seconds=10.0)

        # the project's way: worker processes, batched LLM calls, response cache
        t0 = time.perf_counter()
        s = annotate_folder(
            videos, root / "dataset", cfg, AnnotateOptions(workers=args.workers, progress=False)
        )
        ours = time.perf_counter() - t0

        # baseline: one clip at a time, every stage in turn, one LLM call per prompt, no cache
        t0 = time.perf_counter()
        llm = make_llm("offline")
        with Perceiver(cfg.perception, frame="peak") as perceiver:
            for c in clips:
                rec = clue_record(perceiver(c))
                reason_records([rec], llm)
        base = time.perf_counter() - t0

        # analyze on a 10-second clip, models loaded once beforehand
        with Predictor(preset="tiny") as analyzer:
            analyzer(clips[0])  # warm-up
            t0 = time.perf_counter()
            analyzer(ten)
            analyze_s = time.perf_counter() - t0

    n = args.clips
    print(f"{n} clips of {args.seconds:.0f} s, offline LLM (SmolLM2-135M), {os.cpu_count()} CPU cores")
    print(f"{'method':<58}{'seconds':>9}{'clips/min':>11}{'speed-up':>10}")
    print(
        f"{'baseline: one clip at a time, unbatched, no cache':<58}{base:>9.2f}"
        f"{60 * n / base:>11.1f}{1.0:>9.2f}x"
    )
    print(
        f"{f'annotate ({args.workers} workers, batched, cached; loads incl.)':<58}{ours:>9.2f}"
        f"{60 * n / ours:>11.1f}{base / ours:>9.2f}x"
    )
    total = sum(s.timings.values())
    print(
        "annotate stage shares: "
        + ", ".join(f"{k} {100 * v / total:.0f}% ({v:.1f} s)" for k, v in s.timings.items())
    )
    print(
        f"analyze on a 10 s clip after loading: {analyze_s:.2f} s ({analyze_s / 10:.2f}x the clip's duration)"
    )


if __name__ == "__main__":
    main()
