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
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AUTimeline:
        """The inverse of :meth:`to_dict`."""
        try:
            names = list(data["names"])
            rows = [[np.nan if v is None else float(v) for v in row] for row in data["intensity"]]
            presence = data.get("presence")
            return cls(
                times=np.asarray(data["times"], dtype=np.float64),
                names=names,
                intensity=np.asarray(rows, dtype=np.float32).reshape(len(rows), len(names)),
                presence=None if presence is None else np.asarray(presence, dtype=bool),
                face_found=np.asarray(data["face_found"], dtype=bool),
                source=str(data.get("source", "unknown")),
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

    ``"sum"``: the largest sum of all AU intensities (what the authors say they ran).
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
    columns = np.arange(len(tl.names))
    if variant == "frequent":
        if tl.presence is not None:
            active = tl.presence.astype(bool)
        else:
            with np.errstate(invalid="ignore"):
                active = tl.intensity >= ACTIVE_THRESHOLD
        counts = active[face].sum(axis=0)
        means = values[face].mean(axis=0)
        order = sorted(columns, key=lambda k: (-counts[k], -means[k], k))
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


def expression_phrases(intensities: Mapping[str, float], threshold: float = ACTIVE_THRESHOLD) -> list[str]:
    """The phrases of the active AUs, strongest first, e.g. ``["lip corner puller", "cheek raiser"]``."""
    return [AU_NAMES[a] for a in active_aus(intensities, threshold) if a in AU_NAMES]


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
            f"peak {t:.2f} s",
            xy=(t, AU_MAX),
            xytext=(4, -12),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_ylim(0, AU_MAX + 0.2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("AU intensity (0-5)")
    ax.set_title(title or f"action units ({tl.source})")
    if ever:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise EmotionLlamaError(f"{path}: cannot write the AU plot ({exc.strerror or exc})") from None
    return path
