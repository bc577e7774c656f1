"""Facial action units (AUs): from MediaPipe blendshapes or OpenFace 2 output to a per-frame
timeline, the peak frame, and the phrases of the visual expression description (SPEC 6).

The authors ran OpenFace 2 (AU intensities ``AUxx_r`` on a 0..5 scale, presence ``AUxx_c``). OpenFace
is not installable from a package registry, so the default source here is MediaPipe's 52 blendshape
scores (0..1), mapped to the 18 AUs of SPEC 6 as ``intensity = clip(5 * sum(weight * score), 0, 5)``
so that thresholds written for OpenFace (active at 1.0, the label rules' 0.8) apply unchanged.
OpenFace CSVs, where available, are read by :func:`read_openface_csv`.

Blendshape -> AU table (weights; both sides averaged unless said otherwise)::

    AU01 inner brow raiser      browInnerUp 1.0
    AU02 outer brow raiser      browOuterUpLeft/Right 0.5 each
    AU04 brow lowerer           browDownLeft/Right 0.5 each
    AU05 upper lid raiser       eyeWideLeft/Right 0.5 each
    AU06 cheek raiser           cheekSquintLeft/Right 0.5 each + eyeSquintLeft/Right 0.4 each
    AU07 lid tightener          eyeSquintLeft/Right 0.5 each
    AU09 nose wrinkler          noseSneerLeft/Right 0.5 each
    AU10 upper lip raiser       mouthUpperUpLeft/Right 0.5 each
    AU12 lip corner puller      mouthSmileLeft/Right 0.5 each
    AU14 dimpler                mouthDimpleLeft/Right 0.5 each
    AU15 lip corner depressor   mouthFrownLeft/Right 0.5 each
    AU17 chin raiser            mouthShrugLower 1.0
    AU20 lip stretcher          mouthStretchLeft/Right 0.5 each
    AU23 lip tightener          mouthPressLeft/Right 0.5 each
    AU25 lips part              jawOpen 0.4 + mouthLowerDownLeft/Right 0.15 each
                                + mouthUpperUpLeft/Right 0.15 each
    AU26 jaw drop               jawOpen 1.0
    AU28 lip suck               mouthRollLower 0.5 + mouthRollUpper 0.5
    AU45 blink                  eyeBlinkLeft/Right 0.5 each

Known limits of the proxy, measured on real faces: the FaceLandmarker bundle scores ``cheekSquint``
at ~0 on every face tried, smiles included, so AU06 also takes the eye squint (the cheek raiser's
visible effect on the eyes) and cannot be told from AU07; a squinting smile also raises
``eyeBlink`` (AU45). Treat the values as proxies, not FACS codings.

Landmark geometry (:func:`face_geometry`) corrects the two proxies that failed on real faces
(hand labels in ``tests/data/au_hand_labels.csv``; agreement table in ``docs/perception.md``):

* **AU04 brow lowerer**: ``browDown`` stays near 0 on a crying face whose brows are visibly knit,
  so AU04 is the larger of the blendshape value and a geometric one, from the height of the brows
  above the line through the eye corners divided by the inter-ocular distance:
  ``5 * (BROW_NEUTRAL - height) / BROW_SPAN`` clipped to 0..5, with ``BROW_NEUTRAL`` = 0.295
  (neutral and smiling faces read 0.29-0.33) and ``BROW_SPAN`` = 0.07 (the posed anger photo reads
  0.216, the crying frames 0.23-0.27).
* **Eye closure**: ``eyeBlink`` reads 0.6-0.9 over whole stretches of some videos, so a level of
  AU45 would fill the timeline. The eyes' openness is measured instead (lid gap over eye width,
  both eyes averaged: 0.25-0.41 open, below 0.13 shut) and turned into *events*
  (:func:`eye_events`): blinks (closures shorter than ``CLOSURE_MIN_S`` = 1 s) counted as a rate,
  and closures that last, reported with their times. AU45 stays in the timeline for the plot but is
  never an expression phrase and never counts towards the peak frame.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.names import printable

#: The AUs of SPEC 6 (OpenFace 2's set) and the phrases used in expression descriptions.
AU_NAMES: dict[str, str] = {
    "AU01": "inner brow raiser",
    "AU02": "outer brow raiser",
    "AU04": "brow lowerer",
    "AU05": "upper lid raiser",
    "AU06": "cheek raiser",
    "AU07": "lid tightener",
    "AU09": "nose wrinkler",
    "AU10": "upper lip raiser",
    "AU12": "lip corner puller",
    "AU14": "dimpler",
    "AU15": "lip corner depressor",
    "AU17": "chin raiser",
    "AU20": "lip stretcher",
    "AU23": "lip tightener",
    "AU25": "lips part",
    "AU26": "jaw drop",
    "AU28": "lip suck",
    "AU45": "blink",
}


def _both(stem: str, weight: float = 0.5) -> tuple[tuple[str, float], ...]:
    return ((f"{stem}Left", weight), (f"{stem}Right", weight))


#: AU -> weighted MediaPipe blendshapes (see the module docstring for the table and the scale).
BLENDSHAPE_TO_AU: dict[str, tuple[tuple[str, float], ...]] = {
    "AU01": (("browInnerUp", 1.0),),
    "AU02": _both("browOuterUp"),
    "AU04": _both("browDown"),
    "AU05": _both("eyeWide"),
    "AU06": _both("cheekSquint") + _both("eyeSquint", 0.4),
    "AU07": _both("eyeSquint"),
    "AU09": _both("noseSneer"),
    "AU10": _both("mouthUpperUp"),
    "AU12": _both("mouthSmile"),
    "AU14": _both("mouthDimple"),
    "AU15": _both("mouthFrown"),
    "AU17": (("mouthShrugLower", 1.0),),
    "AU20": _both("mouthStretch"),
    "AU23": _both("mouthPress"),
    # Lips part whenever the jaw drops or either lip moves away from the other (teeth in a smile).
    "AU25": (("jawOpen", 0.4), *_both("mouthLowerDown", 0.15), *_both("mouthUpperUp", 0.15)),
    "AU26": (("jawOpen", 1.0),),
    "AU28": (("mouthRollLower", 0.5), ("mouthRollUpper", 0.5)),
    "AU45": _both("eyeBlink"),
}

#: OpenFace's intensity scale.
AU_MAX = 5.0
ACTIVE_THRESHOLD = 1.0

#: AUs that are not expressions of their own: blinks are events (:func:`eye_events`), not levels.
EVENT_AUS: frozenset[str] = frozenset({"AU45"})

# -- landmark geometry (FaceMesh indices; "image-left" = the person's right) -----------------------
_EYE_OUTER = (33, 263)
_EYE_CORNERS = (33, 133, 362, 263)
_BROWS = (105, 66, 107, 334, 296, 336)  # upper brow points, middle to inner, both sides
_LIDS = ((159, 145, 33, 133), (386, 374, 362, 263))  # upper lid, lower lid, eye corners

#: Brow height (above the eye-corner line, in inter-ocular distances) of a face without AU04.
BROW_NEUTRAL = 0.295
#: How far below ``BROW_NEUTRAL`` the brows are at full AU04 intensity (5).
BROW_SPAN = 0.07
#: Eye openness (lid gap over eye width) below which the eyes count as shut.
EYES_CLOSED_BELOW = 0.13
#: A closure at least this long is "eyes closed", shorter ones are blinks.
CLOSURE_MIN_S = 1.0
#: Blinks per minute from which the blinking is called frequent (resting adults blink about 17 times
#: a minute, about 26 in conversation: Bentivoglio et al. 1997, Movement Disorders 12(6)).
FREQUENT_BLINKS_PER_MIN = 35.0
#: Seconds of face needed before a blink rate means anything.
MIN_FACE_S_FOR_RATE = 5.0


@dataclass(frozen=True)
class FaceGeometry:
    """Pose-robust measures of one face from its landmarks (2-D, roll removed, scaled by the
    inter-ocular distance)."""

    #: Mean height of the brows above the line through the eye corners.
    brow_height: float
    #: Lid gap over eye width (the "eye aspect ratio"), both eyes averaged.
    eye_openness: float


def face_geometry(landmarks: np.ndarray) -> FaceGeometry | None:
    """Brow height and eye openness of a face from its 478 FaceMesh landmarks; ``None`` when the
    landmarks are not a full mesh or degenerate."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < 478 or lm.shape[1] < 2 or not np.isfinite(lm[:, :2]).all():
        return None
    p = lm[:, :2]
    axis = p[_EYE_OUTER[1]] - p[_EYE_OUTER[0]]
    iod = float(np.hypot(*axis))
    if iod <= 1e-6:
        return None
    c, s = axis / iod
    # rotate so the eye line is horizontal, then scale by the inter-ocular distance (image y grows down)
    q = (p - p[list(_EYE_OUTER)].mean(axis=0)) @ np.array([[c, -s], [s, c]]) / iod
    eye_y = float(q[list(_EYE_CORNERS), 1].mean())
    brow = eye_y - float(q[list(_BROWS), 1].mean())
    openness = []
    for up, low, a, b in _LIDS:
        width = float(np.hypot(*(q[b] - q[a])))
        openness.append(float(np.hypot(*(q[up] - q[low]))) / width if width > 1e-6 else 0.0)
    return FaceGeometry(brow_height=brow, eye_openness=float(np.mean(openness)))


def brow_lowerer_from_geometry(brow_height: float) -> float:
    """AU04 intensity (0..5) from the brow height (see the module docstring)."""
    return float(min(AU_MAX, max(0.0, AU_MAX * (BROW_NEUTRAL - brow_height) / BROW_SPAN)))


def aus_from_face(blendshapes: Mapping[str, float], landmarks: np.ndarray | None = None) -> dict[str, float]:
    """The 18 AU intensities of one face: :func:`aus_from_blendshapes`, with AU04 raised to its
    geometric value where the landmarks show lowered brows that the blendshapes miss."""
    return face_measures(blendshapes, landmarks)[0]


def face_measures(
    blendshapes: Mapping[str, float], landmarks: np.ndarray | None
) -> tuple[dict[str, float], float]:
    """:func:`aus_from_face` and the eye openness (NaN without landmarks), one geometry for both."""
    aus = aus_from_blendshapes(blendshapes)
    geo = face_geometry(landmarks) if landmarks is not None else None
    if geo is None:
        return aus, float("nan")
    aus["AU04"] = max(aus["AU04"], brow_lowerer_from_geometry(geo.brow_height))
    return aus, geo.eye_openness


def eye_openness_of(landmarks: np.ndarray | None) -> float:
    """Eye openness of a face, NaN without usable landmarks."""
    geo = face_geometry(landmarks) if landmarks is not None else None
    return float("nan") if geo is None else geo.eye_openness


def aus_from_blendshapes(blendshapes: Mapping[str, float]) -> dict[str, float]:
    """All 18 AU intensities (0..5, in :data:`AU_NAMES` order) from blendshape scores; a blendshape
    missing from the dict counts as 0."""
    out: dict[str, float] = {}
    for au, parts in BLENDSHAPE_TO_AU.items():
        total = sum(w * float(blendshapes.get(name, 0.0)) for name, w in parts)
        out[au] = float(min(AU_MAX, max(0.0, AU_MAX * total)))
    return out


# -- timeline ---------------------------------------------------------------------------------------
@dataclass
class AUTimeline:
    """AU intensities over a clip's analysed frames.

    ``intensity`` is NaN where no face was found, and in the columns of AUs a source only detects
    (OpenFace gives AU28 as presence ``AU28_c`` without an intensity)."""

    times: np.ndarray  # (T,) seconds
    names: list[str]  # AU codes
    intensity: np.ndarray  # (T, K) float, 0..5
    presence: np.ndarray | None  # (T, K) bool (OpenFace AUxx_c), None when not available
    face_found: np.ndarray  # (T,) bool
    source: str  # "mediapipe-blendshapes" or "openface"
    #: (T,) eye openness from the landmarks (NaN without a face); ``None`` for sources without
    #: landmarks (OpenFace CSVs): blinks then come from AU45 (see :func:`eye_events`).
    eye_openness: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        self.intensity = np.asarray(self.intensity, dtype=np.float32)
        self.face_found = np.asarray(self.face_found, dtype=bool).reshape(-1)
        t, k = len(self.times), len(self.names)
        if self.intensity.shape != (t, k):
            raise EmotionLlamaError(
                f"AUTimeline: intensity has shape {self.intensity.shape}, expected ({t}, {k}) for {t} "
                f"times and {k} AU names"
            )
        if self.face_found.shape != (t,):
            raise EmotionLlamaError(
                f"AUTimeline: face_found has {self.face_found.shape[0]} entries, expected {t}"
            )
        if self.eye_openness is not None:
            self.eye_openness = np.asarray(self.eye_openness, dtype=np.float32).reshape(-1)
            if self.eye_openness.shape != (t,):
                raise EmotionLlamaError(
                    f"AUTimeline: eye_openness has {self.eye_openness.shape[0]} entries, expected {t}"
                )
        if self.presence is not None:
            self.presence = np.asarray(self.presence, dtype=bool)
            if self.presence.shape != (t, k):
                raise EmotionLlamaError(
                    f"AUTimeline: presence has shape {self.presence.shape}, expected ({t}, {k})"
                )

    def __len__(self) -> int:
        return len(self.times)

    def intensities_at(self, index: int) -> dict[str, float]:
        """One frame's AU intensities (AUs without a value left out)."""
        row = self.intensity[index]
        return {n: float(v) for n, v in zip(self.names, row, strict=True) if np.isfinite(v)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: lists, NaN as ``None``, intensities rounded to 3 decimals."""

        def cell(v: float) -> float | None:
            return round(float(v), 3) if math.isfinite(v) else None

        return {
            "source": self.source,
            "names": list(self.names),
            "times": [round(float(t), 4) for t in self.times],
            "face_found": [bool(f) for f in self.face_found],
            "intensity": [[cell(v) for v in row] for row in self.intensity.tolist()],
            "presence": None if self.presence is None else self.presence.astype(bool).tolist(),
            "eye_openness": None
            if self.eye_openness is None
            else [cell(v) for v in self.eye_openness.tolist()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AUTimeline:
        """The inverse of :meth:`to_dict`."""
        try:
            names = list(data["names"])
            rows = [[np.nan if v is None else float(v) for v in row] for row in data["intensity"]]
            presence = data.get("presence")
            openness = data.get("eye_openness")
            return cls(
                times=np.asarray(data["times"], dtype=np.float64),
                names=names,
                intensity=np.asarray(rows, dtype=np.float32).reshape(len(rows), len(names)),
                presence=None if presence is None else np.asarray(presence, dtype=bool),
                face_found=np.asarray(data["face_found"], dtype=bool),
                source=str(data.get("source", "unknown")),
                eye_openness=None
                if openness is None
                else np.asarray([np.nan if v is None else float(v) for v in openness], dtype=np.float32),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EmotionLlamaError(f"AU timeline record: malformed ({type(exc).__name__}: {exc})") from None


def timeline_from_blendshapes(
    times: Sequence[float], per_frame: Sequence[Mapping[str, float] | None]
) -> AUTimeline:
    """A MediaPipe timeline: one blendshape dict per frame, ``None`` where there was no face."""
    if len(times) != len(per_frame):
        raise EmotionLlamaError(f"timeline: {len(times)} times but {len(per_frame)} frames of blendshapes")
    names = list(AU_NAMES)
    intensity = np.full((len(times), len(names)), np.nan, dtype=np.float32)
    found = np.zeros(len(times), dtype=bool)
    for i, shapes in enumerate(per_frame):
        if shapes is not None:
            aus = aus_from_blendshapes(shapes)
            intensity[i] = [aus[n] for n in names]
            found[i] = True
    return AUTimeline(
        np.asarray(times, dtype=np.float64), names, intensity, None, found, "mediapipe-blendshapes"
    )


# -- OpenFace ---------------------------------------------------------------------------------------
_AU_COLUMN = re.compile(r"^AU(\d{2})_([rc])$")


def read_openface_csv(path: str | Path) -> AUTimeline:
    """An OpenFace 2 FeatureExtraction CSV as a timeline.

    Headers may carry leading spaces (OpenFace writes ``" AU01_r"``). Times come from ``timestamp``
    (else the row number). Rows with ``success`` 0 have no face. For multi-face output (a
    ``face_id`` column), the face with the most successful rows is kept.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise EmotionLlamaError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EmotionLlamaError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise EmotionLlamaError(f"{path}: empty; expected an OpenFace CSV with a header row")
    header = [h.strip() for h in rows[0]]
    col = {h: i for i, h in enumerate(header)}
    codes: dict[str, dict[str, int]] = {}
    for i, h in enumerate(header):
        m = _AU_COLUMN.match(h)
        if m:
            codes.setdefault(f"AU{m.group(1)}", {})[m.group(2)] = i
    if not codes:
        raise EmotionLlamaError(f"{path}: no AUxx_r or AUxx_c columns; not an OpenFace FeatureExtraction CSV")
    names = sorted(codes, key=lambda c: int(c[2:]))
    data = [(n, r) for n, r in enumerate(rows[1:], start=2) if any(cell.strip() for cell in r)]
    for line, r in data:
        if len(r) != len(header):
            raise EmotionLlamaError(f"{path}: line {line} has {len(r)} fields, the header has {len(header)}")

    def number(line: int, r: list[str], i: int) -> float:
        try:
            return float(r[i])
        except ValueError:
            raise EmotionLlamaError(
                f"{path}: line {line}, column {header[i]!r}: {r[i].strip()!r} is not a number"
            ) from None

    success = [number(line, r, col["success"]) != 0 if "success" in col else True for line, r in data]
    if "face_id" in col and data:
        ids = [r[col["face_id"]].strip() for _, r in data]
        if len(set(ids)) > 1:
            # the face OpenFace tracked longest stands in for the main person
            best = Counter(i for i, ok in zip(ids, success, strict=True) if ok).most_common(1)
            keep_id = best[0][0] if best else ids[0]
            keep = [i == keep_id for i in ids]
            data = [d for d, k in zip(data, keep, strict=True) if k]
            success = [s for s, k in zip(success, keep, strict=True) if k]
    n = len(data)
    if "timestamp" in col:
        times = np.array([number(line, r, col["timestamp"]) for line, r in data], dtype=np.float64)
    else:
        times = np.arange(n, dtype=np.float64)
    intensity = np.full((n, len(names)), np.nan, dtype=np.float32)
    has_c = any("c" in codes[a] for a in names)
    presence = np.zeros((n, len(names)), dtype=bool) if has_c else None
    found = np.asarray(success, dtype=bool)
    for t, (line, r) in enumerate(data):
        if not found[t]:
            continue
        for k, au in enumerate(names):
            if "r" in codes[au]:
                intensity[t, k] = number(line, r, codes[au]["r"])
            if presence is not None and "c" in codes[au]:
                presence[t, k] = number(line, r, codes[au]["c"]) >= 0.5
    return AUTimeline(times, names, np.clip(intensity, 0.0, AU_MAX), presence, found, "openface")


# -- peak frame and phrases -------------------------------------------------------------------------
def peak_index(tl: AUTimeline, variant: str = "sum", top_k: int = 5) -> int | None:
    """The peak frame (SPEC 6.2), ``None`` when no frame has a face.

    ``"sum"``: the largest sum of all AU intensities (what the authors say they ran), blinks
    (:data:`EVENT_AUS`) left out: a frame with shut eyes is not the expression's apex.
    ``"frequent"``: the paper's description: keep the clip's ``top_k`` most frequently active AUs
    (active: intensity >= 1.0, or OpenFace presence when the timeline has it; ties by mean
    intensity), then the largest sum of those. When no AU is ever active it falls back to all AUs.
    Frames without a face never win; ties go to the earliest frame.
    """
    if variant not in ("sum", "frequent"):
        raise EmotionLlamaError(f"peak variant {variant!r}: use 'sum' or 'frequent'")
    if top_k < 1:
        raise EmotionLlamaError(f"peak top_k {top_k}: must be at least 1")
    face = tl.face_found.astype(bool)
    if not face.any():
        return None
    values = np.nan_to_num(tl.intensity.astype(np.float64), nan=0.0)
    columns = np.asarray([k for k, n in enumerate(tl.names) if n not in EVENT_AUS], dtype=int)
    if variant == "frequent":
        if tl.presence is not None:
            active = tl.presence.astype(bool)
        else:
            with np.errstate(invalid="ignore"):
                active = tl.intensity >= ACTIVE_THRESHOLD
        counts = active[face].sum(axis=0)
        means = values[face].mean(axis=0)
        order = sorted(columns.tolist(), key=lambda k: (-counts[k], -means[k], k))
        chosen = [k for k in order if counts[k] > 0][:top_k]
        if chosen:
            columns = np.asarray(chosen)
    scores = values[:, columns].sum(axis=1)
    scores[~face] = -np.inf
    return int(np.argmax(scores))


def active_aus(intensities: Mapping[str, float], threshold: float = ACTIVE_THRESHOLD) -> list[str]:
    """AU codes at or above ``threshold``, strongest first (ties in code order)."""
    items = [(a, float(v)) for a, v in intensities.items() if v is not None and math.isfinite(float(v))]
    return [a for a, v in sorted(items, key=lambda av: (-av[1], av[0])) if v >= threshold]


#: An AU is an expression at the peak only when it rises this far (0..5 scale) above the clip's own
#: baseline; a level the face holds all clip long (a resting offset of the proxy) says nothing.
MIN_RISE = 0.5
#: The clip's baseline of an AU: this percentile of its intensity over the frames with a face.
BASELINE_PERCENTILE = 10.0
#: Frames with a face needed for a baseline (2 s at the default 10 analysed frames per second).
MIN_BASELINE_FRAMES = 20
#: Below this spread (largest per-AU standard deviation) the face never moves: a still picture, whose
#: baseline would equal its peak. Such clips are judged on their levels alone.
STILL_FACE_SD = 0.05


def au_baseline(tl: AUTimeline) -> dict[str, float] | None:
    """Per-AU baseline of a clip (:data:`BASELINE_PERCENTILE` over the frames with a face), or
    ``None`` when the clip cannot have one: fewer than :data:`MIN_BASELINE_FRAMES` face frames, or a
    face that never moves (a still picture made into a video)."""
    face = tl.face_found.astype(bool)
    if int(face.sum()) < MIN_BASELINE_FRAMES:
        return None
    values = tl.intensity[face].astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return None
    with np.errstate(invalid="ignore"):
        spread = np.nanstd(np.where(finite, values, np.nan), axis=0)
    if not np.isfinite(spread).any() or float(np.nanmax(spread)) < STILL_FACE_SD:
        return None
    out: dict[str, float] = {}
    for k, name in enumerate(tl.names):
        col = values[finite[:, k], k]
        if col.size:
            out[name] = float(np.percentile(col, BASELINE_PERCENTILE))
    return out


def expressed_aus(
    intensities: Mapping[str, float],
    baseline: Mapping[str, float] | None = None,
    threshold: float = ACTIVE_THRESHOLD,
    min_rise: float = MIN_RISE,
) -> list[str]:
    """The AUs that are an expression in this frame, strongest first: at or above ``threshold``,
    not an event AU (blinks), and, with a ``baseline``, at least ``min_rise`` above it."""
    out = []
    for au in active_aus(intensities, threshold):
        if au in EVENT_AUS:
            continue
        if baseline is not None and au in baseline and float(intensities[au]) - baseline[au] < min_rise:
            continue
        out.append(au)
    return out


def expression_phrases(
    intensities: Mapping[str, float],
    threshold: float = ACTIVE_THRESHOLD,
    baseline: Mapping[str, float] | None = None,
) -> list[str]:
    """The phrases of :func:`expressed_aus`, e.g. ``["lip corner puller", "cheek raiser"]``."""
    return [AU_NAMES[a] for a in expressed_aus(intensities, baseline, threshold) if a in AU_NAMES]


# -- eye events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EyeEvents:
    """Blinks and closures of a clip's main face."""

    #: Closures shorter than :data:`CLOSURE_MIN_S`.
    blinks: int
    #: Blinks per minute of face time; ``None`` with less than :data:`MIN_FACE_S_FOR_RATE` of face.
    blinks_per_min: float | None
    #: ``(start_s, end_s)`` of the closures that lasted at least :data:`CLOSURE_MIN_S`.
    closures: tuple[tuple[float, float], ...]
    #: Seconds with a face (analysed frames times the frame interval).
    face_s: float
    #: ``"landmarks"`` (eye openness) or ``"AU45"`` (an OpenFace timeline, closed at AU45 >= 2.5).
    source: str

    @property
    def closed_s(self) -> float:
        return float(sum(b - a for a, b in self.closures))

    def closed_at(self, t: float) -> bool:
        """Whether ``t`` falls inside one of the lasting closures."""
        return any(a - 1e-6 <= t <= b + 1e-6 for a, b in self.closures)

    def phrases(self) -> list[str]:
        """Eye phrases for the clues: "eyes closed" when a closure lasted, "frequent blinking" when
        the rate is high; nothing for ordinary blinking."""
        out = []
        if self.closures:
            out.append("eyes closed")
        if self.blinks_per_min is not None and self.blinks_per_min >= FREQUENT_BLINKS_PER_MIN:
            out.append("frequent blinking")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "blinks": self.blinks,
            "blinks_per_min": None if self.blinks_per_min is None else round(self.blinks_per_min, 1),
            "closures_s": [[round(a, 2), round(b, 2)] for a, b in self.closures],
            "closed_s": round(self.closed_s, 2),
            "face_s": round(self.face_s, 2),
            "source": self.source,
        }


def eye_events(
    tl: AUTimeline, closed_below: float = EYES_CLOSED_BELOW, closure_min_s: float = CLOSURE_MIN_S
) -> EyeEvents | None:
    """Blinks and lasting closures from the eye openness (or, for OpenFace timelines, AU45 >= 2.5);
    ``None`` without a face or without either signal.

    A closure is a run of consecutive face frames with shut eyes; it lasts from its first frame to
    one frame interval after its last (so one shut frame at 10 fps is a 0.1 s blink). At 10 analysed
    frames per second blinks under 100 ms can fall between frames: the rate is a lower bound."""
    face = tl.face_found.astype(bool)
    if not face.any() or len(tl) == 0:
        return None
    if tl.eye_openness is not None:
        with np.errstate(invalid="ignore"):
            shut = face & np.isfinite(tl.eye_openness) & (tl.eye_openness < closed_below)
        source = "landmarks"
    elif "AU45" in tl.names:
        col = tl.intensity[:, tl.names.index("AU45")]
        with np.errstate(invalid="ignore"):
            shut = face & np.isfinite(col) & (col >= 2.5)
        source = "AU45"
    else:
        return None
    times = tl.times
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.1
    step = step if step > 0 else 0.1
    blinks = 0
    closures: list[tuple[float, float]] = []
    k = 0
    n = len(times)
    while k < n:
        if not shut[k]:
            k += 1
            continue
        j = k
        while j + 1 < n and shut[j + 1]:
            j += 1
        start, end = float(times[k]), float(times[j]) + step
        if end - start >= closure_min_s - 1e-9:
            closures.append((start, end))
        else:
            blinks += 1
        k = j + 1
    face_s = float(face.sum()) * step
    rate = 60.0 * blinks / face_s if face_s >= MIN_FACE_S_FOR_RATE else None
    return EyeEvents(blinks, rate, tuple(closures), face_s, source)


# -- the cry face -----------------------------------------------------------------------------------
#: Share of a lasting closure's face frames with AU04 present (>= 0.8) that makes it a cry face.
CRY_AU04_SHARE = 1 / 3


def cry_episodes(tl: AUTimeline, threshold: float = 0.8) -> list[tuple[float, float]]:
    """The cry face: lasting eye closures (:func:`eye_events`) during which AU04 is at or above
    ``threshold`` in at least :data:`CRY_AU04_SHARE` of the face frames (brows lowered, eyes
    squeezed shut: Oster's infant "cry face", Darwin's grief muscles). ``(start_s, end_s)`` each."""
    eyes = eye_events(tl)
    if eyes is None or not eyes.closures or "AU04" not in tl.names:
        return []
    au04 = tl.intensity[:, tl.names.index("AU04")].astype(np.float64)
    face = tl.face_found.astype(bool)
    out = []
    for a, b in eyes.closures:
        inside = face & (tl.times >= a - 1e-6) & (tl.times < b - 1e-6)
        if inside.any():
            with np.errstate(invalid="ignore"):
                share = float((au04[inside] >= threshold).mean())
            if share >= CRY_AU04_SHARE - 1e-9:
                out.append((a, b))
    return out


def correct_cry_face(tl: AUTimeline) -> AUTimeline:
    """The timeline with the smile proxy corrected in cry-face episodes: MediaPipe's ``mouthSmile``
    fires on the sideways lip stretch of a crying mouth (hand labels: every crying frame with a
    visible mouth has the lips stretched, none has the corners pulled up), so there AU12's value
    moves to AU20 (lip stretcher) and AU12 becomes 0. Unchanged (the same object) without an
    episode or without those columns."""
    episodes = cry_episodes(tl)
    if not episodes or "AU12" not in tl.names or "AU20" not in tl.names:
        return tl
    inside = np.zeros(len(tl), dtype=bool)
    for a, b in episodes:
        inside |= (tl.times >= a - 1e-6) & (tl.times < b - 1e-6)
    inside &= tl.face_found.astype(bool)
    values = tl.intensity.copy()
    k12, k20 = tl.names.index("AU12"), tl.names.index("AU20")
    values[inside, k20] = np.fmax(values[inside, k20], values[inside, k12])
    values[inside, k12] = 0.0
    return AUTimeline(
        tl.times, list(tl.names), values, tl.presence, tl.face_found, tl.source, tl.eye_openness
    )


# -- plot -------------------------------------------------------------------------------------------
def plot_au_timeline(tl: AUTimeline, path: str | Path, peak: int | None = None, title: str = "") -> Path:
    """A PNG of the timeline: one line per AU that is ever active (else the five strongest), frames
    without a face shaded, the peak frame marked and labelled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if peak is not None and not 0 <= peak < len(tl):
        raise EmotionLlamaError(f"{path}: peak index {peak} is outside the timeline's {len(tl)} frames")
    # Figure + Agg canvas rather than pyplot: no global state, safe in worker threads and processes.
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    values = tl.intensity.astype(np.float64)
    peaks = np.nanmax(np.where(np.isfinite(values), values, -np.inf), axis=0) if len(tl) else np.array([])
    ever = [k for k in range(len(tl.names)) if len(tl) and peaks[k] >= ACTIVE_THRESHOLD]
    if tl.presence is not None:
        ever = sorted(set(ever) | {k for k in range(len(tl.names)) if tl.presence[:, k].any()})
    if not ever and len(tl):
        ever = [int(k) for k in np.argsort(-peaks, kind="stable")[:5] if np.isfinite(peaks[k])]
    for k in ever:
        code = tl.names[k]
        ax.plot(tl.times, values[:, k], label=f"{code} {AU_NAMES.get(code, '')}".strip(), linewidth=1.2)
    for i in np.flatnonzero(~tl.face_found):
        lo = tl.times[i - 1] if i > 0 else tl.times[i]
        hi = tl.times[i + 1] if i + 1 < len(tl) else tl.times[i]
        ax.axvspan(0.5 * (lo + tl.times[i]), 0.5 * (tl.times[i] + hi), color="0.85", linewidth=0)
    if peak is not None:
        t = float(tl.times[peak])
        ax.axvline(t, color="black", linestyle="--", linewidth=1.0)
        ax.annotate(
            f"peak {t:.2f} s", xy=(t, AU_MAX), xytext=(4, -12), textcoords="offset points", fontsize=8
        )
    ax.set_ylim(0, AU_MAX + 0.2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("AU intensity (0-5)")
    # a file name may hold bytes that are not text: shown escaped, never a rendering failure
    ax.set_title(printable(title) if title else f"action units ({tl.source})")
    if ever:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise EmotionLlamaError(f"{path}: cannot write the AU plot ({exc.strerror or exc})") from None
    return path
