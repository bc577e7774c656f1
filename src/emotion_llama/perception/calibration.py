"""Agreement of the AU proxies with hand labels: how well do MediaPipe's blendshapes (and the landmark
geometry that corrects them) say which action units a real face shows?

A hand-label file is a CSV (``#`` lines are comments) with columns ``source`` (a video or picture
file name, relative to a media folder), ``time_s`` (seconds into the video; 0 for pictures) and one
column per AU code (``AU01`` ...) or ``EC`` (eyes closed), holding ``1`` (present), ``0`` (absent)
or nothing (not visible, unsure: not scored). The project's own file is
``tests/data/au_hand_labels.csv``, on the offline test media.

:func:`measure_frames` runs the face analyser on the labelled frames; :func:`agreement` scores two
mappings against the labels: ``blendshapes`` (the blendshape table alone, AU45 >= 1 as "eyes
closed", as before the correction) and ``corrected`` (:func:`~.action_units.aus_from_face` and the
eye openness). An AU counts as present at intensity >= 1 (:data:`~.action_units.ACTIVE_THRESHOLD`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.perception.action_units import (
    ACTIVE_THRESHOLD,
    EYES_CLOSED_BELOW,
    aus_from_blendshapes,
    aus_from_face,
    eye_openness_of,
)

#: Columns of a hand-label file that are not AU codes.
_META = {"source", "time_s", "note"}
MAPPINGS = ("blendshapes", "corrected")


@dataclass(frozen=True)
class LabelledFrame:
    source: str
    time_s: float
    labels: dict[str, bool]  # AU code or "EC" -> present (unscored ones left out)


def read_hand_labels(path: str | Path) -> list[LabelledFrame]:
    """The frames of a hand-label CSV; errors name the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EmotionLlamaError(f"{path}: cannot read the hand labels ({exc.strerror or exc})") from None
    rows = [(n, line) for n, line in enumerate(lines, start=1) if line.strip() and not line.startswith("#")]
    if not rows:
        raise EmotionLlamaError(f"{path}: no header row")
    reader = csv.reader([line for _, line in rows])
    header = [h.strip() for h in next(reader)]
    if not {"source", "time_s"} <= set(header):
        raise EmotionLlamaError(f"{path}: needs 'source' and 'time_s' columns, has {header}")
    out = []
    for (line_no, _), cells in zip(rows[1:], reader, strict=True):
        rec = dict(zip(header, (c.strip() for c in cells), strict=False))
        try:
            t = float(rec["time_s"])
        except ValueError:
            raise EmotionLlamaError(f"{path}:{line_no}: time_s {rec['time_s']!r} is not a number") from None
        labels = {}
        for key, value in rec.items():
            if key in _META or not value:
                continue
            if value not in ("0", "1"):
                raise EmotionLlamaError(f"{path}:{line_no}: {key} is {value!r}; use 1, 0 or leave it empty")
            labels[key] = value == "1"
        out.append(LabelledFrame(rec["source"], t, labels))
    return out


def measure_frames(frames: Iterable[LabelledFrame], media_dir: str | Path) -> list[dict[str, Any] | None]:
    """For each labelled frame, the largest face's blendshapes and landmarks (``None`` when no face
    is found), read from ``media_dir``."""
    import cv2

    from emotion_llama.media.video import read_frames_at
    from emotion_llama.perception.faces import MediaPipeFaceAnalyzer

    media_dir = Path(media_dir)
    out: list[dict[str, Any] | None] = []
    with MediaPipeFaceAnalyzer(square_tiles=False) as analyzer:
        for f in frames:
            path = media_dir / f.source
            if path.suffix.lower() in {".jpg", ".jpeg", ".png"}:
                bgr = cv2.imread(str(path))
                if bgr is None:
                    raise EmotionLlamaError(f"{path}: not a readable picture")
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            else:
                rgb = read_frames_at(path, [f.time_s])[0].rgb
            faces = analyzer.detect(rgb)
            if not faces:
                out.append(None)
                continue
            face = max(faces, key=lambda x: x.area)
            out.append({"blendshapes": face.blendshapes, "landmarks": face.landmarks})
    return out


def predicted(measured: Mapping[str, Any], mapping: str) -> dict[str, bool]:
    """Which AUs (and EC) one mapping says are present in a measured face."""
    if mapping == "blendshapes":
        aus = aus_from_blendshapes(measured["blendshapes"])
        out = {au: v >= ACTIVE_THRESHOLD for au, v in aus.items()}
        out["EC"] = aus["AU45"] >= ACTIVE_THRESHOLD
        return out
    if mapping == "corrected":
        aus = aus_from_face(measured["blendshapes"], measured["landmarks"])
        out = {au: v >= ACTIVE_THRESHOLD for au, v in aus.items()}
        openness = eye_openness_of(measured["landmarks"])
        out["EC"] = bool(np.isfinite(openness) and openness < EYES_CLOSED_BELOW)
        return out
    raise EmotionLlamaError(f"unknown mapping {mapping!r}; use one of {MAPPINGS}")


def agreement(
    frames: list[LabelledFrame], measured: list[dict[str, Any] | None]
) -> dict[str, dict[str, dict[str, float]]]:
    """``{mapping: {code: {"n", "accuracy", "recall", "precision", "f1"}}}`` over the scored frames
    of each code (a frame without a face counts as "nothing present"). ``recall`` and ``precision``
    are NaN where undefined (no positive label or no positive prediction)."""
    codes = sorted({c for f in frames for c in f.labels}, key=lambda c: (c == "EC", c))
    result: dict[str, dict[str, dict[str, float]]] = {}
    for mapping in MAPPINGS:
        per: dict[str, dict[str, float]] = {}
        preds = [predicted(m, mapping) if m is not None else {} for m in measured]
        for code in codes:
            pairs = [
                (f.labels[code], p.get(code, False))
                for f, p in zip(frames, preds, strict=True)
                if code in f.labels
            ]
            tp = sum(g and q for g, q in pairs)
            fp = sum(q and not g for g, q in pairs)
            fn = sum(g and not q for g, q in pairs)
            n = len(pairs)
            rec = tp / (tp + fn) if tp + fn else float("nan")
            prec = tp / (tp + fp) if tp + fp else float("nan")
            f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else float("nan")
            per[code] = {
                "n": float(n),
                "accuracy": sum(g == q for g, q in pairs) / n if n else float("nan"),
                "recall": rec,
                "precision": prec,
                "f1": f1,
            }
        result[mapping] = per
    return result
