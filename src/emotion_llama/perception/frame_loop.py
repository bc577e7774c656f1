"""The per-frame part of perception: faces on each frame at the analysis rate, the running AU peak,
and the full-resolution frames that will be needed later, kept one at a time (bounded memory).

Two ways to save detector runs without changing what a frame's faces are (the detector, MediaPipe
in IMAGE mode, is deterministic and stateless, so a face is the same whichever frames ran before):

* a frame whose downscaled pixels equal the previous detected frame's (a still picture made into a
  video) reuses that frame's faces;
* with ``refine`` (``PerceptionConfig.analysis_refine``), coarse to fine in time: every other frame
  is held back while the next one is analysed; the held frame is analysed too when its two
  neighbours' faces differ (a face appears or leaves, moves by more than :data:`MOVE` of its
  width, an AU changes by more than ``refine`` on the 0-5 scale, the eye openness by more than
  :data:`EYE`), and otherwise takes the earlier neighbour's faces. The frames the encoders' crops
  and the global frame come from are always analysed. The timeline keeps one row per frame at the
  analysis rate, so its statistics weigh time as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emotion_llama.config import PerceptionConfig
from emotion_llama.errors import ConfigError
from emotion_llama.media.video import Frame

#: A face centre moving by more than this fraction of the face's width between two analysed
#: frames makes the frame between them analysed too (the main-face tracks need the positions).
MOVE = 0.15
#: An eye-openness change (landmark ratio, about 0.1 closed to 0.35 open) that does the same.
EYE = 0.05


@dataclass
class _Held:
    frame: Frame
    small: np.ndarray
    scale: float


class FrameLoop:
    """Feed it every frame of the one decoding pass (:meth:`feed`), then :meth:`finish`; then read
    ``times``, ``per_frame`` (faces per frame, full-resolution coordinates), ``kept`` (position ->
    full-resolution frame) and ``scales``, ``global_pos``, the running peak (``best_pos``,
    ``best_frame``, the largest face's AU sum) and ``detector_runs``."""

    def __init__(
        self,
        config: PerceptionConfig,
        detect: Callable[[np.ndarray], list[Any]],
        wanted: Sequence[float],
        global_target: float | None,
        measures: Any,
    ) -> None:
        self.config = config
        self._detect_small = detect
        self.wanted = list(wanted)
        self.global_target = global_target
        self.measures = measures
        self.refine = config.analysis_refine
        if self.refine is not None and not (np.isfinite(self.refine) and self.refine > 0):
            raise ConfigError(
                f"perception.analysis_refine must be a positive AU difference (0-5 scale) or null, "
                f"got {self.refine!r}"
            )
        self.times: list[float] = []
        self.per_frame: list[list[Any]] = []
        self.kept: dict[int, np.ndarray] = {}
        self.scales: dict[int, float] = {}
        self.next_wanted = 0
        self.global_pos: int | None = None
        self.best_sum = -1.0
        self.best_pos: int | None = None
        self.best_frame: np.ndarray | None = None
        self.last_rgb: np.ndarray | None = None
        self.last_scale = 1.0
        self.detector_runs = 0
        self._last_small: np.ndarray | None = None
        self._last_found: list[Any] = []
        self._analysed: list[Any] | None = None  # faces of the last analysed frame committed
        self._held: _Held | None = None

    # -- the pass ---------------------------------------------------------------------------------
    def feed(self, f: Frame) -> None:
        small, scale = self._downscale(f.rgb)
        if (
            self.refine is not None
            and self._held is None
            and self._analysed is not None
            and not self._must(f)
        ):
            self._held = _Held(f, small, scale)
            return
        found = self._faces(small, scale)
        held, self._held = self._held, None
        if held is not None:
            prev = self._analysed if self._analysed is not None else []
            if self._differ(prev, found):
                self._commit(held.frame, self._faces(held.small, held.scale, remember=False), held.scale)
            else:
                self._commit(held.frame, prev, held.scale)
        self._commit(f, found, scale)

    def finish(self) -> None:
        """Analyse a frame still held back (the clip's last)."""
        held, self._held = self._held, None
        if held is not None:
            self._commit(held.frame, self._faces(held.small, held.scale), held.scale)

    # -- helpers ----------------------------------------------------------------------------------
    def _downscale(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        import cv2

        h, w = rgb.shape[:2]
        scale = min(1.0, self.config.analysis_max_side / max(h, w))
        if scale == 1.0:
            return rgb, scale
        return cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA), scale

    def _faces(self, small: np.ndarray, scale: float, *, remember: bool = True) -> list[Any]:
        if self._last_small is not None and np.array_equal(small, self._last_small):
            return self._last_found  # the very same pixels: the same faces
        found = [_rescale_face(face, 1.0 / scale) for face in self._detect_small(small)]
        self.detector_runs += 1
        if remember:
            self._last_small, self._last_found = small, found
        return found

    def _must(self, f: Frame) -> bool:
        """Whether this frame is one the crops or the global frame will come from."""
        t = f.time_s + 1e-6
        if self.next_wanted < len(self.wanted) and t >= self.wanted[self.next_wanted]:
            return True
        return self.global_target is not None and self.global_pos is None and t >= self.global_target

    def _differ(self, before: list[Any], after: list[Any]) -> bool:
        """Whether the faces of two analysed frames differ enough for the frame between them to be
        analysed too."""
        if len(before) != len(after):
            return True
        assert self.refine is not None
        for face in after:
            cx, cy, width = _centre(face)
            other = min(before, key=lambda b: (_centre(b)[0] - cx) ** 2 + (_centre(b)[1] - cy) ** 2)
            ox, oy, _ = _centre(other)
            if np.hypot(ox - cx, oy - cy) > MOVE * max(width, 1.0):
                return True
            a, b = self.measures.aus(face), self.measures.aus(other)
            if max(abs(a[k] - b.get(k, 0.0)) for k in a) > self.refine:
                return True
            ea, eb = self.measures.openness(face), self.measures.openness(other)
            if np.isnan(ea) != np.isnan(eb) or (not np.isnan(ea) and abs(ea - eb) > EYE):
                return True
        return False

    def _commit(self, f: Frame, found: list[Any], scale: float) -> None:
        """Record a frame, in time order: its faces, kept frames, the running peak."""
        from emotion_llama.perception.action_units import EVENT_AUS

        pos = len(self.times)
        self.times.append(f.time_s)
        self.per_frame.append(found)
        self.last_rgb, self.last_scale = f.rgb, scale
        while self.next_wanted < len(self.wanted) and f.time_s + 1e-6 >= self.wanted[self.next_wanted]:
            self.kept[pos] = f.rgb
            self.scales[pos] = scale
            self.next_wanted += 1
        if (
            self.global_target is not None
            and self.global_pos is None
            and f.time_s + 1e-6 >= self.global_target
        ):
            self.global_pos = pos
            self.kept[pos] = f.rgb
        self._analysed = found  # a frame that took its neighbour's faces passes the same list
        if found:
            # The largest face stands in for the main one until the tracks are known; the peak is
            # recomputed on the main face's timeline. A frame that took its neighbour's faces has
            # the same sum, so it never replaces the neighbour as the peak.
            au = self.measures.aus(max(found, key=_area))
            total = sum(v for k, v in au.items() if k not in EVENT_AUS)  # as peak_index sums
            if total > self.best_sum:
                self.best_sum, self.best_pos, self.best_frame = total, pos, f.rgb


def _area(face: Any) -> float:
    x0, y0, x1, y1 = face.bbox
    return (x1 - x0) * (y1 - y0)


def _centre(face: Any) -> tuple[float, float, float]:
    x0, y0, x1, y1 = face.bbox
    return (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0


def _rescale_face(face: Any, factor: float) -> Any:
    """The face found on a downscaled frame, in full-resolution pixel coordinates."""
    if factor == 1.0:
        return face
    from dataclasses import replace

    lm = face.landmarks.copy()
    lm[:, :2] *= factor
    return replace(face, bbox=tuple(float(v) * factor for v in face.bbox), landmarks=lm)
