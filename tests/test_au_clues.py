"""AU clues that mean what they say: blinks as events, phrases above the clip's own baseline, the
landmark corrections of the blendshape proxy, and the cry face. Unit tests on hand-built timelines
(fast) and the agreement with hand labels on the real test media (slow)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from emotion_llama.annotate.clues import candidate_labels, face_vote
from emotion_llama.perception.action_units import (
    AU_NAMES,
    CLOSURE_MIN_S,
    AUTimeline,
    au_baseline,
    brow_lowerer_from_geometry,
    correct_cry_face,
    cry_episodes,
    expressed_aus,
    eye_events,
    face_geometry,
    peak_index,
)

NAMES = list(AU_NAMES)
HAND_LABELS = Path(__file__).parent / "data" / "au_hand_labels.csv"


def _timeline(
    rows: list[dict[str, float]], openness: list[float] | None = None, fps: float = 10.0
) -> AUTimeline:
    t = len(rows)
    values = np.zeros((t, len(NAMES)), dtype=np.float32)
    for i, row in enumerate(rows):
        for au, v in row.items():
            values[i, NAMES.index(au)] = v
    return AUTimeline(
        times=np.arange(t) / fps,
        names=NAMES,
        intensity=values,
        presence=None,
        face_found=np.ones(t, dtype=bool),
        source="test",
        eye_openness=None if openness is None else np.asarray(openness, dtype=np.float32),
    )


def test_blinks_are_events_and_lasting_closures_are_reported() -> None:
    # 10 s at 10 fps, eyes open (0.3) except three 0.2 s blinks and one 1.5 s closure
    openness = [0.3] * 100
    for start in (10, 40, 70):
        openness[start : start + 2] = [0.05, 0.05]
    openness[50:65] = [0.04] * 15
    ev = eye_events(_timeline([{}] * 100, openness))
    assert ev is not None
    assert ev.blinks == 3
    assert ev.blinks_per_min == pytest.approx(60 * 3 / 10.0)
    assert len(ev.closures) == 1
    a, b = ev.closures[0]
    assert a == pytest.approx(5.0) and b == pytest.approx(6.5)
    assert ev.phrases() == ["eyes closed"]
    assert ev.closed_at(5.5) and not ev.closed_at(4.0)


def test_a_high_blink_level_alone_never_becomes_a_clue() -> None:
    # AU45 at 4 in every frame (the blendshape level seen on real videos), eyes open by the landmarks
    tl = _timeline([{"AU45": 4.0, "AU12": 3.0, "AU06": 2.0}] * 30, [0.3] * 30)
    ev = eye_events(tl)
    assert ev is not None and ev.blinks == 0 and not ev.closures and ev.phrases() == []
    assert "AU45" not in expressed_aus(tl.intensities_at(0))
    # the blink column never decides the peak either
    rows = [{"AU12": 2.0}] * 5 + [{"AU45": 5.0, "AU12": 1.0}] + [{"AU12": 2.5}]
    assert peak_index(_timeline(rows)) == 6


def test_frequent_blinking_needs_a_high_rate() -> None:
    openness = [0.3] * 100
    for start in range(0, 100, 12):  # 9 blinks in 10 s: 54 a minute
        openness[start] = 0.05
    ev = eye_events(_timeline([{}] * 100, openness))
    assert ev is not None and ev.blinks_per_min is not None and ev.blinks_per_min > 35
    assert ev.phrases() == ["frequent blinking"]


def test_phrases_rise_above_the_clips_baseline() -> None:
    # AU07 sits at 2.0 all clip long (a resting offset); AU12 rises from 0.5 to 3.5 at the peak
    rows = [{"AU07": 2.0, "AU12": 0.5}] * 25 + [{"AU07": 2.1, "AU12": 3.5}]
    tl = _timeline(rows)
    base = au_baseline(tl)
    assert base is not None and base["AU07"] == pytest.approx(2.0) and base["AU12"] == pytest.approx(0.5)
    peak = tl.intensities_at(25)
    assert expressed_aus(peak, base) == ["AU12"]
    assert expressed_aus(peak) == ["AU12", "AU07"]  # without a baseline every active AU counts


def test_a_still_picture_has_no_baseline() -> None:
    tl = _timeline([{"AU12": 3.0, "AU06": 2.0}] * 40)
    assert au_baseline(tl) is None
    assert au_baseline(_timeline([{"AU12": 3.0}] * 5 + [{"AU12": 1.0}] * 5)) is None  # too few frames


def test_geometric_brow_lowerer() -> None:
    assert brow_lowerer_from_geometry(0.33) == 0.0
    assert brow_lowerer_from_geometry(0.295) == 0.0
    assert brow_lowerer_from_geometry(0.295 - 0.035) == pytest.approx(2.5)
    assert brow_lowerer_from_geometry(0.1) == 5.0


def test_face_geometry_on_a_synthetic_mesh() -> None:
    lm = np.zeros((478, 3), dtype=np.float32)
    lm[[33, 263], 0] = [100.0, 200.0]  # inter-ocular distance 100
    lm[[133, 362], 0] = [130.0, 170.0]
    lm[[33, 133, 362, 263], 1] = 100.0
    lm[[105, 66, 107, 334, 296, 336], 1] = 70.0  # brows 30 px = 0.30 above the eye line
    lm[[159, 386], 1], lm[[145, 374], 1] = 95.0, 105.0  # lid gap 10 px over 30 px eye width
    lm[[159, 145], 0], lm[[386, 374], 0] = 115.0, 185.0
    geo = face_geometry(lm)
    assert geo is not None
    assert geo.brow_height == pytest.approx(0.30, abs=1e-6)
    assert geo.eye_openness == pytest.approx(10 / 30, abs=1e-6)
    # rotation does not change them
    theta = math.radians(25)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    turned = lm.copy()
    turned[:, :2] = lm[:, :2] @ rot.T
    geo2 = face_geometry(turned)
    assert geo2 is not None and geo2.brow_height == pytest.approx(0.30, abs=1e-5)
    assert face_geometry(np.zeros((10, 3))) is None


def test_happy_is_not_a_candidate_with_lowered_brows() -> None:
    assert candidate_labels({"AU06": 2.0, "AU12": 3.0})[0][0] == "happy"
    labels = [lab for lab, _ in candidate_labels({"AU06": 2.0, "AU12": 3.0, "AU04": 2.0})]
    assert "happy" not in labels
    cry = candidate_labels({"AU06": 2.0, "AU12": 3.0}, cry=True)
    assert cry[0] == ("sad", 1.0) and "happy" not in [lab for lab, _ in cry]


def _crying_then_smiling() -> AUTimeline:
    # 3 s of the cry face (eyes shut, brows lowered, the smile proxy firing on the lip stretch), then
    # 3 s of a smile with open eyes
    cry = [{"AU04": 2.5, "AU12": 4.0, "AU06": 2.0}] * 30
    smile = [{"AU12": 4.0, "AU06": 2.0}] * 30
    return _timeline(cry + smile, [0.03] * 30 + [0.3] * 30)


def test_the_cry_face_is_not_a_smile() -> None:
    tl = _crying_then_smiling()
    episodes = cry_episodes(tl)
    assert len(episodes) == 1 and episodes[0][0] == pytest.approx(0.0) and episodes[0][1] >= CLOSURE_MIN_S
    fixed = correct_cry_face(tl)
    k12, k20 = NAMES.index("AU12"), NAMES.index("AU20")
    assert (fixed.intensity[:30, k12] == 0).all() and (fixed.intensity[:30, k20] == 4.0).all()
    assert (fixed.intensity[30:, k12] == 4.0).all()  # the real smile is left alone
    vote = face_vote(fixed, ("happy", "sad", "neutral", "angry", "surprise"))
    assert vote is not None and vote.label in ("sad", "happy")
    crying_only = correct_cry_face(_timeline([{"AU04": 2.5, "AU12": 4.0, "AU06": 2.0}] * 30, [0.03] * 30))
    vote = face_vote(crying_only, ("happy", "sad", "neutral"))
    assert vote is not None and vote.label == "sad" and vote.confidence == pytest.approx(1.0)


def test_laughing_with_shut_eyes_stays_happy() -> None:
    # eyes squeezed shut while laughing, brows not lowered: no cry face
    tl = _timeline([{"AU12": 4.5, "AU06": 2.5}] * 15, [0.05] * 15)
    assert cry_episodes(tl) == []
    vote = face_vote(tl, ("happy", "sad", "neutral"))
    assert vote is not None and vote.label == "happy"


def test_a_face_without_any_pattern_votes_neutral_weakly() -> None:
    vote = face_vote(_timeline([{"AU25": 1.2}] * 20, [0.3] * 20), ("happy", "sad", "neutral"))
    assert vote is not None and vote.label == "neutral" and vote.confidence < 0.5


@pytest.mark.slow
def test_agreement_with_hand_labels_on_real_faces() -> None:
    """The corrected mapping agrees with the hand labels at least as well as the blendshapes alone on
    every AU, and much better on the two it corrects (brow lowerer, eyes closed)."""
    from emotion_llama.errors import EmotionLlamaError
    from emotion_llama.media.samples import real_media_dir
    from emotion_llama.perception.calibration import agreement, measure_frames, read_hand_labels

    try:
        media = real_media_dir()
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    frames = read_hand_labels(HAND_LABELS)
    table = agreement(frames, measure_frames(frames, media))
    old, new = table["blendshapes"], table["corrected"]
    for code in old:
        assert new[code]["accuracy"] >= old[code]["accuracy"] - 1e-9, code
    assert new["AU04"]["f1"] >= 0.8 > old["AU04"]["f1"]
    assert new["EC"]["accuracy"] >= 0.95
    assert new["AU12"]["f1"] >= 0.85


@pytest.mark.slow
def test_the_crying_video_does_not_read_as_a_smile() -> None:
    """The Pexels woman's first seconds (eyes shut, brows knit, hand at the mouth): the clues say no
    smile, the face votes sad."""
    from emotion_llama.config import load_config
    from emotion_llama.errors import EmotionLlamaError
    from emotion_llama.media.samples import real_media_dir
    from emotion_llama.perception.pipeline import Perceiver

    try:
        video = real_media_dir() / "WolfgangLanger_Pexels.mp4"
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    from emotion_llama.media.video import read_frames_at  # noqa: F401  (decoder present)

    cfg = load_config("paper")
    import dataclasses
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "crying.mp4"
        subprocess.run(
            ["ffmpeg", "-y", "-loglevel", "error", "-t", "5.5", "-i", str(video), "-an", "-c:v", "libx264",
             "-preset", "ultrafast", str(clip)],
            check=True,
        )  # fmt: skip
        with Perceiver(dataclasses.replace(cfg.perception), transcribe=False) as perceiver:
            p = perceiver(clip)
    record = p.record()
    assert "lip corner puller" not in record["peak"]["phrases"]
    assert "eyes closed" in record["eyes"]["phrases"]
    vote = face_vote(p.timeline, ("neutral", "angry", "happy", "sad", "worried", "surprise", "fear"))
    assert vote is not None and vote.label == "sad"
