"""Faces: detection with MediaPipe FaceLandmarker, alignment to an upright crop, and the choice of
the main person in a clip.

The detector is Google's FaceLandmarker bundle (478 landmarks and 52 blendshape scores per face),
loaded from the verified offline copy when the offline package is installed, else downloaded once
from Google's official URL (see :mod:`emotion_llama.sources`).

Its face detector is a short-range model that letterboxes the image to a square before it shrinks
it, so on a wide frame small faces shrink twice and are missed (3 of the 5 faces of a 1000x667 group
photo). :class:`MediaPipeFaceAnalyzer` therefore also runs on square tiles of non-square frames and
merges the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emotion_llama.closing import Closeable
from emotion_llama.errors import EmotionLlamaError

# FaceMesh landmark indices. "Image-left" means the side that appears on the left of an upright,
# unmirrored picture (the person's right). Alignment keys on the mesh's own semantics rather than on
# image x order so that a tilted or upside-down face still comes out upright.
EYE_IMAGE_LEFT = (33, 133)  # outer and inner corner
EYE_IMAGE_RIGHT = (362, 263)  # inner and outer corner
NOSE_TIP = 1
MOUTH_IMAGE_LEFT = 61
MOUTH_IMAGE_RIGHT = 291
N_LANDMARKS = 478

#: Canonical positions of (eye, eye, nose tip, mouth corner, mouth corner) in a unit square. The
#: inter-eye distance is 0.30 of the crop, which leaves the brows, forehead and chin inside it:
#: the expression needs the whole face, unlike the tight crops used for face recognition.
CANONICAL_5 = np.array(
    [[0.35, 0.40], [0.65, 0.40], [0.50, 0.595], [0.38, 0.70], [0.62, 0.70]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Face:
    """One detected face. ``landmarks`` rows are x, y in pixels of the analysed image and MediaPipe's
    relative depth z (unitless, smaller is closer to the camera)."""

    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    landmarks: np.ndarray  # (478, 3)
    blendshapes: dict[str, float]  # the 52 MediaPipe blendshape scores, 0..1
    score: float = 1.0  # FaceLandmarker reports no per-face confidence, hence 1.0

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.bbox
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


class FaceAnalyzer(Protocol):
    def detect(self, rgb: np.ndarray) -> list[Face]: ...


def face_landmarker_model() -> Path:
    """The verified FaceLandmarker ``.task`` file: the offline package's copy, else the download."""
    from emotion_llama.sources import fetch, offline_file

    try:
        return offline_file("face_landmarker")
    except EmotionLlamaError:
        return fetch("face_landmarker")


def _check_rgb(rgb: Any, what: str = "image") -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise EmotionLlamaError(
            f"{what} of shape {shape} and type {dtype}: expected an (H, W, 3) uint8 RGB array"
        )
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise EmotionLlamaError(f"{what} of shape {rgb.shape}: too small to hold a face")
    return rgb


def _bbox_of(points: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    # Landmarks of a face cut by the frame edge extrapolate outside it; the box is what is visible.
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return (
        float(np.clip(x0, 0, width)),
        float(np.clip(y0, 0, height)),
        float(np.clip(x1, 0, width)),
        float(np.clip(y1, 0, height)),
    )


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _square_tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Square windows (x0, y0, x1, y1) of the short side, spread evenly along the long side."""
    side = min(width, height)
    long = max(width, height)
    n = int(np.ceil(long / side))
    starts = np.linspace(0, long - side, n).round().astype(int)
    if width >= height:
        return [(int(s), 0, int(s) + side, height) for s in starts]
    return [(0, int(s), width, int(s) + side) for s in starts]


class MediaPipeFaceAnalyzer(Closeable):
    """:class:`FaceAnalyzer` on MediaPipe FaceLandmarker in IMAGE mode: every call is independent,
    so frames may come in any order and from any clip. Load once, call :meth:`detect` per frame,
    :meth:`close` (or use it as a context manager) to free the native graph.

    ``square_tiles``: on frames whose sides differ by 20% or more, also search square tiles (see
    the module docstring); this costs one extra run per tile (two for 16:9). Detections of one face
    from several runs are merged, keeping the one seen at the higher resolution unless it is cut
    by a tile edge.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        num_faces: int = 4,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
        square_tiles: bool = True,
    ) -> None:
        if num_faces < 1:
            raise EmotionLlamaError(f"num_faces {num_faces}: must be at least 1")
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        self.model_path = face_landmarker_model() if model_path is None else Path(model_path).expanduser()
        if not self.model_path.is_file():
            raise EmotionLlamaError(f"{self.model_path}: no such FaceLandmarker model file")
        self.num_faces = num_faces
        self.square_tiles = square_tiles
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=num_faces,
            min_face_detection_confidence=min_detection_confidence,
            min_face_presence_confidence=min_presence_confidence,
            output_face_blendshapes=True,
        )
        try:
            self._landmarker: Any = vision.FaceLandmarker.create_from_options(options)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EmotionLlamaError(
                f"{self.model_path}: not a usable FaceLandmarker model ({first})"
            ) from None

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        # getattr: __del__ also runs on an instance whose __init__ failed before the model loaded
        landmarker = getattr(self, "_landmarker", None)
        if landmarker is not None:
            self._landmarker = None
            landmarker.close()

    def __del__(self) -> None:
        # Best effort only: at interpreter exit the native library may already be gone.
        # (no contextlib here: module globals may already be cleared at interpreter exit)
        try:  # noqa: SIM105
            self.close()
        except Exception:
            pass

    # -- detection ---------------------------------------------------------------------------------
    def _run(self, rgb: np.ndarray, x0: int, y0: int) -> list[Face]:
        import mediapipe as mp

        h, w = rgb.shape[:2]
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._landmarker.detect(image)
        faces = []
        for marks, shapes in zip(result.face_landmarks, result.face_blendshapes, strict=True):
            lm = np.array([(p.x * w + x0, p.y * h + y0, p.z) for p in marks], dtype=np.float32)
            blend = {c.category_name: float(c.score) for c in shapes}
            faces.append(Face(bbox=(0.0, 0.0, 0.0, 0.0), landmarks=lm, blendshapes=blend))
        return faces

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in one RGB frame, largest first, at most ``num_faces``."""
        if getattr(self, "_landmarker", None) is None:
            raise EmotionLlamaError("MediaPipeFaceAnalyzer: used after close()")
        rgb = _check_rgb(rgb)
        height, width = rgb.shape[:2]
        windows = [(0, 0, width, height)]
        if self.square_tiles and max(width, height) >= 1.2 * min(width, height):
            windows += _square_tiles(width, height)
        # (cut by a tile edge, -relative size, face): sorting puts the best view of a face first.
        found: list[tuple[bool, float, Face]] = []
        for wx0, wy0, wx1, wy1 in windows:
            for face in self._run(rgb[wy0:wy1, wx0:wx1], wx0, wy0):
                fx0, fy0, fx1, fy1 = (
                    float(v) for v in (*face.landmarks[:, :2].min(0), *face.landmarks[:, :2].max(0))
                )
                margin = 0.02 * (wx1 - wx0)
                cut = (
                    (wx0 > 0 and fx0 < wx0 + margin)
                    or (wx1 < width and fx1 > wx1 - margin)
                    or (wy0 > 0 and fy0 < wy0 + margin)
                    or (wy1 < height and fy1 > wy1 - margin)
                )
                rel = (fx1 - fx0) / max(wx1 - wx0, wy1 - wy0)
                bbox = _bbox_of(face.landmarks[:, :2], width, height)
                found.append((bool(cut), -rel, Face(bbox, face.landmarks, face.blendshapes, face.score)))
        found.sort(key=lambda item: (item[0], item[1]))
        kept: list[Face] = []
        for _, _, face in found:
            if all(iou(face.bbox, k.bbox) < 0.3 for k in kept):
                kept.append(face)
        kept.sort(key=lambda f: f.area, reverse=True)
        return kept[: self.num_faces]


# -- alignment ---------------------------------------------------------------------------------------
def five_points(face: Face) -> np.ndarray:
    """(5, 2) image points: eye, eye, nose tip, mouth corner, mouth corner (image-left first)."""
    lm = np.asarray(face.landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < N_LANDMARKS or lm.shape[1] < 2:
        raise EmotionLlamaError(
            f"face landmarks of shape {lm.shape}: expected ({N_LANDMARKS}, 3) FaceMesh points"
        )
    pts = np.stack(
        [
            lm[list(EYE_IMAGE_LEFT), :2].mean(axis=0),
            lm[list(EYE_IMAGE_RIGHT), :2].mean(axis=0),
            lm[NOSE_TIP, :2],
            lm[MOUTH_IMAGE_LEFT, :2],
            lm[MOUTH_IMAGE_RIGHT, :2],
        ]
    )
    if not np.isfinite(pts).all():
        raise EmotionLlamaError("face landmarks: non-finite eye, nose or mouth points")
    return pts


def align_face(rgb: np.ndarray, face: Face, size: int = 224) -> np.ndarray:
    """The face as a (size, size, 3) uint8 crop: upright, eyes level, centred, scaled so the inter-eye
    distance is 0.30 of the crop (:data:`CANONICAL_5`). Pixels beyond the frame repeat its edge."""
    import cv2

    rgb = _check_rgb(rgb)
    if size < 8:
        raise EmotionLlamaError(f"align_face size {size}: must be at least 8 pixels")
    src = five_points(face).astype(np.float32)
    dst = (CANONICAL_5 * size).astype(np.float32)
    # A threshold far above any residual makes every point an inlier, so the result is the least-
    # squares similarity over all five points rather than RANSAC's fit to a pair of them.
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1e6)
    if matrix is None or not np.isfinite(matrix).all():
        raise EmotionLlamaError("align_face: the face's eye, nose and mouth points are degenerate")
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# -- main person ------------------------------------------------------------------------------------
def _track_record(
    track_id: int, faces: dict[int, Face], n_frames: int, width: int, height: int
) -> dict[str, Any]:
    frame_area = float(width * height)
    half_diag = 0.5 * float(np.hypot(width, height))
    sizes, cents = [], []
    for face in faces.values():
        x0, y0, x1, y1 = face.bbox
        # sqrt: a linear measure, so a face twice as wide counts twice, not four times
        sizes.append(np.sqrt(face.area / frame_area))
        dist = np.hypot(0.5 * (x0 + x1) - 0.5 * width, 0.5 * (y0 + y1) - 0.5 * height)
        cents.append(max(0.0, 1.0 - dist / half_diag))
    size, cent, pers = float(np.mean(sizes)), float(np.mean(cents)), len(faces) / n_frames
    return {
        "track": track_id,
        "frames": len(faces),
        "first_frame": min(faces),
        "size": round(size, 4),
        "centrality": round(cent, 4),
        "persistence": round(pers, 4),
        "score": round(size * cent * pers, 6),
        "_exact": size * cent * pers,
    }


def select_main_face(
    per_frame: Sequence[list[Face]],
    frame_size: tuple[int, int],
    *,
    min_iou: float = 0.3,
) -> tuple[list[Face | None], dict[str, Any]]:
    """The main person's face in every frame (``None`` where absent) and a JSON-friendly record of
    the choice.

    ``frame_size`` is (width, height) of the frames the boxes refer to. Faces are linked into tracks
    greedily, highest box IoU (at least ``min_iou``) with a track's last box first; a track may skip
    frames. Each track scores mean size (sqrt of box area / frame area) x mean centrality (1 - centre
    distance / half diagonal) x persistence (share of frames present); the best score wins.
    """
    width, height = (int(v) for v in frame_size)
    if width <= 0 or height <= 0:
        raise EmotionLlamaError(f"frame_size {tuple(frame_size)}: expected a positive (width, height)")
    n_frames = len(per_frame)
    tracks: list[dict[int, Face]] = []
    last: list[Face] = []
    for t, faces in enumerate(per_frame):
        pairs = sorted(
            ((iou(last[k].bbox, f.bbox), k, i) for k in range(len(tracks)) for i, f in enumerate(faces)),
            reverse=True,
        )
        used_tracks: set[int] = set()
        used_faces: set[int] = set()
        for overlap, k, i in pairs:
            if overlap < min_iou:
                break
            if k in used_tracks or i in used_faces:
                continue
            tracks[k][t] = faces[i]
            last[k] = faces[i]
            used_tracks.add(k)
            used_faces.add(i)
        for i, face in enumerate(faces):
            if i not in used_faces:
                tracks.append({t: face})
                last.append(face)
    records = [_track_record(k, faces, n_frames, width, height) for k, faces in enumerate(tracks)]
    # ties go to the track seen first (stable sort): the earlier person is usually the subject
    ranked = sorted(records, key=lambda r: -r["_exact"])
    for r in records:
        del r["_exact"]
    choice: dict[str, Any] = {
        "n_tracks": len(tracks),
        "chosen_track": ranked[0]["track"] if ranked else None,
        "chosen": ranked[0] if ranked else None,
        "runner_up": ranked[1] if len(ranked) > 1 else None,
    }
    if not ranked:
        return [None] * n_frames, choice
    chosen = tracks[ranked[0]["track"]]
    return [chosen.get(t) for t in range(n_frames)], choice
