"""The per-frame loop of perception: repeated frames and coarse-to-fine refinement in time.

The loop is driven here by a detector that reads a face's AU value and position from the frame's
pixels, so that which frames are analysed, and what each frame's faces are, can be checked exactly;
the real detector on real videos is in tests/test_faces_aus.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from emotion_llama.config import PerceptionConfig
from emotion_llama.media.video import Frame
from emotion_llama.perception.frame_loop import FrameLoop


@dataclass(frozen=True)
class _Face:
    bbox: tuple[float, float, float, float]
    au: float
    eye: float = 0.3
    blendshapes: dict = field(default_factory=dict)
    landmarks: None = None


class _Measures:
    def aus(self, face: _Face) -> dict[str, float]:
        return {"AU12": face.au, "AU06": 0.0}

    def openness(self, face: _Face) -> float:
        return face.eye


def _frame(i: int, au: float | None, x: float = 10.0, eye: float = 0.3) -> Frame:
    """A 32x32 frame whose pixels say its face: none when ``au`` is None."""
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[0, 0] = (1 if au is not None else 0, round(10 * (au or 0)), round(x))
    rgb[0, 1, 0] = round(100 * eye)
    rgb[1, 1, 0] = i  # every frame's pixels differ
    return Frame(index=i, time_s=i / 10, rgb=rgb)


class _Detector:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, small: np.ndarray) -> list[_Face]:
        self.seen.append(int(small[1, 1, 0]))
        present, au10, x = (int(v) for v in small[0, 0])
        if not present:
            return []
        return [_Face((x, 0.0, x + 10.0, 10.0), au10 / 10, small[0, 1, 0] / 100)]


def _run(frames: list[Frame], refine: float | None, wanted=(), global_target=None):  # type: ignore[no-untyped-def]
    det = _Detector()
    loop = FrameLoop(PerceptionConfig(analysis_refine=refine), det, wanted, global_target, _Measures())
    for f in frames:
        loop.feed(f)
    loop.finish()
    return loop, det


def test_without_refinement_every_frame_is_analysed() -> None:
    frames = [_frame(i, 1.0) for i in range(7)]
    loop, det = _run(frames, None)
    assert det.seen == list(range(7)) and loop.detector_runs == 7
    assert loop.times == [f.time_s for f in frames]


def test_a_steady_face_analyses_every_other_frame_and_fills_the_rest() -> None:
    frames = [_frame(i, 1.0 + 0.1 * i) for i in range(7)]
    loop, det = _run(frames, 0.5)
    assert sorted(det.seen) == [0, 2, 4, 6] and loop.detector_runs == 4
    assert loop.times == [f.time_s for f in frames]  # one row per frame all the same
    for i in (1, 3, 5):  # a frame between two agreeing ones takes the earlier one's faces
        assert loop.per_frame[i] is loop.per_frame[i - 1]
    assert [f[0].au for f in loop.per_frame[::2]] == pytest.approx([1.0, 1.2, 1.4, 1.6])


def test_a_change_between_neighbours_analyses_the_frame_between() -> None:
    aus = [1.0, 1.0, 1.0, 1.3, 2.0, 2.0, 2.0, 2.0, 2.0]
    loop, det = _run([_frame(i, a) for i, a in enumerate(aus)], 0.5)
    # 2 -> 4 changes by 1.0: frame 3 is analysed (its own value); 0 -> 2, 4 -> 6 -> 8 agree
    assert sorted(det.seen) == [0, 2, 3, 4, 6, 8]
    assert loop.per_frame[3][0].au == pytest.approx(1.3)
    assert loop.per_frame[1] is loop.per_frame[0] and loop.per_frame[5] is loop.per_frame[4]
    # the running peak is an analysed frame; a filled frame never replaces its neighbour
    assert loop.best_pos == 4


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("a face appears", {2: {"au": None}}),
        ("the face moves", {2: {"x": 40.0}}),
        ("the eyes close", {2: {"eye": 0.1}}),
    ],
)
def test_faces_appearing_moving_or_eyes_closing_analyse_the_frame_between(name: str, changes: dict) -> None:
    specs = [{"au": 1.0, "x": 10.0, "eye": 0.3} for _ in range(5)]
    for i, change in changes.items():
        specs[i] = {**specs[i], **change}
    loop, det = _run([_frame(i, **s) for i, s in enumerate(specs)], 0.5)
    assert {1, 3} <= set(det.seen), name  # 0 vs 2 and 2 vs 4 differ: both frames between analysed
    assert loop.detector_runs == 5


def test_the_crop_and_global_frames_are_always_analysed() -> None:
    frames = [_frame(i, 1.0) for i in range(10)]
    wanted = [0.15, 0.35, 0.55]  # reached at frames 2, 4 and 6
    loop, det = _run(frames, 0.5, wanted=wanted, global_target=0.5)  # frame 5
    assert {2, 4, 5, 6} <= set(det.seen)
    assert sorted(loop.kept) == [2, 4, 5, 6] and loop.global_pos == 5
    for pos in loop.kept:  # their faces are their own detections, not a neighbour's
        assert loop.per_frame[pos] is not loop.per_frame[pos - 1]


def test_the_last_frame_held_back_is_analysed_at_the_end() -> None:
    loop, det = _run([_frame(i, 1.0) for i in range(4)], 0.5)
    assert sorted(det.seen) == [0, 2, 3] and len(loop.per_frame) == 4


def test_identical_frames_run_the_detector_once() -> None:
    still = _frame(0, 1.0)
    frames = [Frame(index=i, time_s=i / 10, rgb=still.rgb.copy()) for i in range(6)]
    loop, det = _run(frames, None)
    assert det.seen == [0] and loop.detector_runs == 1 and len(loop.times) == 6


@pytest.mark.slow
def test_refinement_on_a_real_video_keeps_the_peak_and_its_aus(tmp_path: Path) -> None:
    from dataclasses import replace

    from emotion_llama.media.samples import real_media_dir
    from emotion_llama.perception.faces import MediaPipeFaceAnalyzer
    from emotion_llama.perception.pipeline import perceive

    video = real_media_dir() / "single_face.mp4"
    config = PerceptionConfig(local_frames=4, temporal_frames=4)
    with MediaPipeFaceAnalyzer() as faces:
        full = perceive(video, config, faces=faces, transcriber=None)
        fine = perceive(video, replace(config, analysis_refine=0.25), faces=faces, transcriber=None)
    assert fine.detector_runs < full.detector_runs == len(full.timeline)
    assert len(fine.timeline) == len(full.timeline)
    a, b = fine.record(), full.record()
    for key in ("index", "time_s", "aus", "active_aus", "phrases"):  # the same peak, read the same
        assert a["peak"][key] == b["peak"][key], key
    assert a["eyes"] == b["eyes"]
    # the clip's baseline (a low percentile of each AU over the frames) moves by a few hundredths
    assert a["peak"]["baseline"] == pytest.approx(b["peak"]["baseline"], abs=0.05)
    assert np.array_equal(fine.local_crops, full.local_crops)  # the crop frames are analysed
    # every analysed frame's AUs are its own, bit for bit; each other frame repeats the one before
    same = (fine.timeline.intensity == full.timeline.intensity).all(axis=1)
    assert int(same.sum()) >= fine.detector_runs
    for i in np.flatnonzero(~same):
        assert np.array_equal(fine.timeline.intensity[i], fine.timeline.intensity[i - 1])


def test_a_bad_threshold_is_refused() -> None:
    from emotion_llama.errors import ConfigError

    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="analysis_refine"):
            FrameLoop(PerceptionConfig(analysis_refine=bad), _Detector(), [], None, _Measures())


def test_the_fast_perception_config_loads() -> None:
    from emotion_llama.config import load_config

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "configs" / "perception_fast.yaml")
    assert config.perception.analysis_fps == 5.0 and config.perception.asr_pad_s == 10.0
    assert config.perception.asr_beam_size == 5 and config.llm == load_config("paper").llm
