"""Video decoding with PyAV: probing, frame streaming by presentation time, and reads at chosen times.

Every reader is a generator over one open container, so memory stays at a frame or two however long
the clip is. Times come from each frame's pts (never from ``index / fps``), which keeps variable
frame rate files right. Frames come out as displayed: the display matrix's rotation is applied,
with the same sense as ffmpeg's own autorotation.

PyAV is imported lazily: the types here are read by code (CLI help, configs) that never decodes.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emotion_llama.errors import ConfigError, EmotionLlamaError, MediaError
from emotion_llama.names import printable

if TYPE_CHECKING:
    import av
    from av.container import InputContainer

#: Gaps shorter than this are decoded through rather than seeked over: a seek restarts at the
#: keyframe before the target, which for typical GOPs (2-10 s) is often behind the current position.
SEEK_AHEAD_S = 2.0
#: Earlier restart points tried when a seek lands after the requested time (imprecise indexes);
#: ``inf`` means the start of the stream, which is always right.
_SEEK_BACKOFF_S = (0.0, 5.0, 60.0, math.inf)
#: Slack for float time comparisons (pts -> seconds conversions are not exact).
_EPS = 1e-6
#: How many index entries at the end of each stream are checked against the file size.
_TAIL_ENTRIES = 32


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, read from its header plus one decoded frame."""

    path: Path
    duration_s: float
    fps: float
    #: From the container when it says; otherwise ``round(duration_s * fps)``.
    n_frames: int
    #: Size as displayed, i.e. after rotation.
    width: int
    height: int
    #: Counter-clockwise degrees (0/90/180/270) the stored picture is turned for display; the value
    #: ffprobe prints as "displaymatrix: rotation of X degrees".
    rotation: int
    has_audio: bool
    audio_sample_rate: int | None
    #: Presentation time of the first frame: 0 for most files, not for e.g. MPEG-TS captures.
    start_s: float = 0.0


@dataclass(frozen=True)
class Frame:
    #: Position in the stream's output order (0 = first frame). Exact when the frames were decoded
    #: from the start; after a seek (``times=`` far apart) it is ``round((time_s - start) * fps)``.
    index: int
    #: Presentation time in seconds, from the frame's pts.
    time_s: float
    #: (H, W, 3) uint8 RGB, rotation applied.
    rgb: np.ndarray


# -- opening and error conversion ----------------------------------------------------------------
def entry_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a media file, in words (a folder, a named pipe, a dangling
    link, a link loop, an empty file...); ``None`` for a regular, non-empty file."""
    try:
        st = os.stat(path)  # follows symbolic links, as opening would
    except FileNotFoundError:
        if os.path.islink(path):
            return "a dangling symbolic link (its target does not exist)"
        return "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        if exc.errno == errno.EACCES:
            return "permission denied"
        if exc.errno == errno.ENAMETOOLONG:
            return "the file name is too long"
        return f"cannot be read ({exc.strerror or exc})"
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "a folder, not a video file"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a video file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a video file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a video file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if st.st_size == 0:
        return "the file is empty (0 bytes)"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def checked_path(path: str | Path) -> Path:
    path = Path(path)
    problem = entry_problem(path)
    if problem is not None:
        raise MediaError(f"{printable(path)}: {problem}")
    return path


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    # PyAV reports bad data through several unrelated classes depending on where it fails
    # (demuxer, decoder, its own Python checks), so all of them are converted.
    return (av.FFmpegError, OSError, ValueError, IndexError, EOFError, UnicodeError)


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


@contextmanager
def open_media(path: Path) -> Iterator[InputContainer]:
    """Open ``path`` (already checked) for reading; every PyAV failure inside the block, opening
    included, becomes a one-line :class:`MediaError` naming the file."""
    import av

    errors = _av_errors()
    try:
        container = av.open(str(path), mode="r")
    except errors as exc:
        raise MediaError(f"{path}: not a readable media file ({_one_line(exc)})") from None
    try:
        yield container
    except EmotionLlamaError:  # ours already name the file (and ConfigError is a ValueError)
        raise
    except errors as exc:
        raise MediaError(f"{path}: decoding failed ({_one_line(exc)})") from None
    finally:
        container.close()


def check_not_truncated(container: InputContainer, path: Path) -> None:
    """Raise when the container's own index points past the end of the file.

    A cut MP4 whose ``moov`` comes first still opens and decodes up to the cut without any error;
    its sample table is the only cheap witness that data is missing."""
    size = path.stat().st_size
    for stream in container.streams:
        try:
            entries = stream.index_entries
            n = len(entries)
        except (AttributeError, TypeError):  # older PyAV, or a stream type without an index
            continue
        for i in range(max(0, n - _TAIL_ENTRIES), n):
            entry = entries[i]
            if entry.pos >= 0 and entry.pos + entry.size > size:
                raise MediaError(
                    f"{path}: truncated: its index lists {stream.type} data up to byte "
                    f"{entry.pos + entry.size} but the file has {size} bytes"
                )


def _video_stream(container: InputContainer, path: Path) -> av.VideoStream:
    import av

    for stream in container.streams.video:
        # Cover art of audio files is a one-picture "video" stream; it is not a video.
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise MediaError(f"{path}: has no video stream")


def _rotation(frame: av.VideoFrame, stream: av.VideoStream) -> int:
    """Counter-clockwise display rotation in {0, 90, 180, 270}."""
    try:
        ccw = float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):
        ccw = 0.0
    if ccw == 0.0:
        # Files from old muxers may carry only the legacy tag; it counts clockwise.
        tag = stream.metadata.get("rotate")
        if tag and re.fullmatch(r"-?\d+(\.\d+)?", tag.strip()):
            ccw = -float(tag)
    return round(ccw / 90.0) % 4 * 90


def _to_rgb(frame: av.VideoFrame, rotation: int, max_side: int | None) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    if rotation:
        # np.rot90 turns counter-clockwise for positive k, the display matrix's sense; checked
        # against ffmpeg's autorotation in the tests.
        rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
    if max_side is not None:
        h, w = rgb.shape[:2]
        if max(h, w) > max_side:
            import cv2

            scale = max_side / max(h, w)
            size = (max(1, min(max_side, round(w * scale))), max(1, min(max_side, round(h * scale))))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return rgb


class _Timer:
    """Seconds of each frame's pts; a frame without one (some raw streams) is placed one nominal
    frame after its predecessor."""

    def __init__(self, stream: av.VideoStream) -> None:
        self.time_base = stream.time_base
        fps = _stream_fps(stream)
        self.step = 1.0 / fps if fps > 0 else 0.04
        self.last: float | None = None

    def __call__(self, frame: av.VideoFrame) -> float:
        if frame.pts is not None and self.time_base is not None:
            t = float(frame.pts * self.time_base)
        else:
            t = 0.0 if self.last is None else self.last + self.step
        self.last = t
        return t


def _stream_fps(stream: av.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


# -- probing ---------------------------------------------------------------------------------------
def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's header and first frame. :class:`MediaError` for a missing, empty, unreadable,
    truncated or video-less file."""
    path = checked_path(path)
    with open_media(path) as container:
        stream = _video_stream(container, path)
        check_not_truncated(container, path)
        stream.thread_type = "AUTO"
        first = next(container.decode(stream), None)
        if first is None:
            raise MediaError(f"{path}: no decodable video frame")
        start = _Timer(stream)(first)
        rotation = _rotation(first, stream)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width

        fps = _stream_fps(stream)
        n_frames = int(stream.frames or 0)
        duration: float | None = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        if duration is None or fps <= 0:
            # Neither header says: demux (no decoding) the stream's packets to find out.
            count, duration = _scan_packets(container, stream)
            n_frames = n_frames or count
            if fps <= 0 and duration > 0:
                fps = count / duration
        else:
            # MP4 stores a dts span, which B-frames with variable frame rate make shorter than
            # the presentation span; the packets of the last GOP tell where the clip really ends.
            end = _presentation_end(container, stream, start + duration)
            if end is not None and end - start > duration + 1e-3:
                duration = end - start
                if n_frames > 0:
                    fps = n_frames / duration
        if n_frames <= 0:
            n_frames = max(1, round(duration * fps))

        audio = container.streams.audio[0] if container.streams.audio else None
        rate = (audio.rate or audio.codec_context.sample_rate or None) if audio is not None else None
    return VideoInfo(
        path=path,
        duration_s=float(duration),
        fps=float(fps),
        n_frames=int(n_frames),
        width=int(width),
        height=int(height),
        rotation=rotation,
        has_audio=audio is not None,
        audio_sample_rate=int(rate) if rate else None,
        start_s=start,
    )


def _presentation_end(container: InputContainer, stream: av.VideoStream, near: float) -> float | None:
    """Latest pts + duration among the packets from the keyframe before ``near`` to the end."""
    container.seek(max(0, math.floor(near / stream.time_base)), stream=stream, backward=True)
    end: float | None = None
    for packet in container.demux(stream):
        if packet.pts is None or packet.size == 0:
            continue
        t = float((packet.pts + (packet.duration or 0)) * stream.time_base)
        end = t if end is None else max(end, t)
    return end


def _scan_packets(container: InputContainer, stream: av.VideoStream) -> tuple[int, float]:
    container.seek(0)
    count, lo, hi = 0, math.inf, -math.inf
    for packet in container.demux(stream):
        if packet.pts is None or packet.size == 0:  # the flush packet has no data
            continue
        count += 1
        t = float(packet.pts * stream.time_base)
        lo = min(lo, t)
        hi = max(hi, t + float((packet.duration or 0) * stream.time_base))
    return count, (hi - lo) if count else 0.0


# -- frame selection -------------------------------------------------------------------------------
def sample_times(info: VideoInfo, choice: str) -> list[float]:
    """Presentation times for a frame choice: ``first``, ``middle``, or ``uniform:N`` (the centres
    of N equal segments of the clip). Pure: nothing is read."""
    start, duration = info.start_s, max(0.0, info.duration_s)
    if choice == "first":
        return [start]
    if choice == "middle":
        return [start + duration / 2]
    match = re.fullmatch(r"uniform:(\d+)", choice)
    if match and int(match.group(1)) > 0:
        n = int(match.group(1))
        return [start + (i + 0.5) * duration / n for i in range(n)]
    raise ConfigError(f"frame choice {choice!r}: use 'first', 'middle' or 'uniform:N' with N >= 1")


def iter_frames(
    path: str | Path,
    *,
    fps: float | None = None,
    times: Sequence[float] | None = None,
    max_side: int | None = None,
) -> Generator[Frame, None, None]:
    """Stream a video's frames, holding at most a frame or two.

    * neither ``fps`` nor ``times``: every frame;
    * ``fps=x``: the first frame of each 1/x s window of presentation time (windows with no frame,
      as in variable frame rate gaps, yield nothing);
    * ``times=[...]``: for each time, in the given order, the first frame whose pts >= it, or the
      last frame when none is; one frame per requested time (repeats allowed);
    * ``max_side``: downscale (aspect kept, ``cv2.INTER_AREA``) so the longer side is <= it.

    Arguments and the file's existence are checked at the call; decoding errors surface while
    iterating, as :class:`MediaError`."""
    if fps is not None and times is not None:
        raise ConfigError("iter_frames: give fps or times, not both")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"iter_frames: fps must be a positive number, got {fps!r}")
    if max_side is not None and max_side < 1:
        raise ConfigError(f"iter_frames: max_side must be >= 1, got {max_side!r}")
    wanted: list[float] | None = None
    if times is not None:
        wanted = [float(t) for t in times]
        if not all(math.isfinite(t) for t in wanted):
            raise ConfigError(f"iter_frames: times must be finite numbers, got {list(times)!r}")
    path = checked_path(path)
    if wanted is not None:
        return _frames_at(path, wanted, max_side)
    return _frames_sequential(path, fps, max_side)


def read_frames_at(path: str | Path, times: Sequence[float], *, max_side: int | None = None) -> list[Frame]:
    """One frame per requested time (see :func:`iter_frames`), as a list."""
    return list(iter_frames(path, times=times, max_side=max_side))


class FrameSampler:
    """The frames :func:`iter_frames` yields from one video stream decoded in order: fed every
    decoded frame, it returns the :class:`Frame` to keep (all of them, or with ``fps`` the first of
    each 1/fps s window of presentation time) and ``None`` for the others. One sampler per pass, so
    that every reader of a stream in order (``iter_frames``, :class:`~emotion_llama.media.clip.
    ClipDecoder`) picks the same frames."""

    def __init__(self, stream: av.VideoStream, fps: float | None, max_side: int | None) -> None:
        self.stream = stream
        self.timer = _Timer(stream)
        self.interval = 1.0 / fps if fps else None
        self.max_side = max_side
        self.rotation = 0
        self.start: float | None = None
        self.last_window = -1
        #: Frames decoded so far, minus one (-1: none yet).
        self.index = -1

    def __call__(self, frame: av.VideoFrame) -> Frame | None:
        self.index += 1
        t = self.timer(frame)
        if self.start is None:
            self.start, self.rotation = t, _rotation(frame, self.stream)
        if self.interval is not None:
            # Windows are counted from the first frame; a frame whose pts went backwards or
            # stays in an already served window is skipped.
            window = math.floor((t - self.start) / self.interval + _EPS)
            if window <= self.last_window:
                return None
            self.last_window = window
        return Frame(index=self.index, time_s=t, rgb=_to_rgb(frame, self.rotation, self.max_side))


def video_stream(container: InputContainer, path: Path) -> av.VideoStream:
    """The file's video stream (cover art left out), checked for truncation and set to decode
    with threads; :class:`MediaError` when there is none."""
    stream = _video_stream(container, path)
    check_not_truncated(container, path)
    stream.thread_type = "AUTO"
    return stream


def _frames_sequential(path: Path, fps: float | None, max_side: int | None) -> Generator[Frame, None, None]:
    with open_media(path) as container:
        stream = video_stream(container, path)
        sampler = FrameSampler(stream, fps, max_side)
        for frame in container.decode(stream):
            kept = sampler(frame)
            if kept is not None:
                yield kept
        if sampler.index < 0:
            raise MediaError(f"{path}: no decodable video frame")


class _Cursor:
    """A decoding position in one open stream that moves forward frame by frame or seeks."""

    def __init__(self, container: InputContainer, stream: av.VideoStream, path: Path) -> None:
        self.container, self.stream, self.path = container, stream, path
        self.timer = _Timer(stream)
        self.fps = _stream_fps(stream)
        tb = stream.time_base
        self.origin = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
        self.rotation: int | None = None
        self.frames: Iterator[av.VideoFrame] = container.decode(stream)
        self.fresh = True  # nothing decoded yet: the decoder sits at the first frame
        self.exact = True  # indices are counted from the first frame
        self.index = -1
        self.eof = False
        self.serial = 0  # bumps on every decoded frame, to recognise a frame served twice
        #: The last decoded frame: (index, time, frame).
        self.current: tuple[int, float, av.VideoFrame] | None = None
        #: ``current`` is the first frame with time >= t for every t >= this (None: unknown).
        self.certified: float | None = None

    def step(self) -> bool:
        """Decode the next frame into ``current``; False (``current`` unchanged) at the end."""
        frame = next(self.frames, None)
        if frame is None:
            self.eof = True
            return False
        t = self.timer(frame)
        if self.rotation is None:
            self.rotation = _rotation(frame, self.stream)
        if self.index < 0 and (self.exact or t <= self.origin + _EPS):
            # The first frame after a restart, or a seek that landed on the very first frame:
            # counting from here is exact. Its own time beats the header's start_time.
            self.origin, self.exact = t, True
        self.index = self.index + 1 if self.exact else round((t - self.origin) * self.fps)
        self.current = (self.index, t, frame)
        self.fresh = False
        self.serial += 1
        return True

    def _seek(self, target: float, *, exact: bool) -> None:
        self.container.seek(math.floor(target / self.stream.time_base), stream=self.stream, backward=True)
        self.frames = self.container.decode(self.stream)
        self.current, self.certified, self.eof, self.index, self.exact = None, None, False, -1, exact
        self.timer.last = None

    def _seek_before(self, t: float) -> None:
        """Seek so that ``current`` is a frame at or before ``t`` (or the first frame)."""
        for back in _SEEK_BACKOFF_S:
            if math.isinf(back) or t - back <= self.origin:
                self._seek(self.origin, exact=True)  # the start: indices are exact again
                if not self.step():
                    raise MediaError(f"{self.path}: no decodable video frame")
                return
            self._seek(t - back, exact=False)
            if self.step() and self.current is not None and self.current[1] <= t + _EPS:
                return
            # Landed after t (an imprecise index) or nowhere: frames in between would be missed.

    def goto(self, t: float) -> None:
        """Make ``current`` the first frame with time >= t, or the last frame when there is none."""
        cur = self.current
        if cur is not None:
            if cur[1] >= t - _EPS and self.certified is not None and t >= self.certified - _EPS:
                return  # frames before cur are all earlier than an earlier target
            if self.eof and cur[1] < t - _EPS:
                return  # cur is the last frame and nothing reaches t
            if not (cur[1] < t - _EPS and t - cur[1] <= SEEK_AHEAD_S):
                self._seek_before(t)  # backwards, or far enough ahead that a seek pays
        elif self.fresh and t - self.origin <= SEEK_AHEAD_S:
            if not self.step():
                raise MediaError(f"{self.path}: no decodable video frame")
        else:
            self._seek_before(t)
        while self.current is not None and self.current[1] < t - _EPS and self.step():
            pass
        self.certified = t


def _frames_at(path: Path, times: list[float], max_side: int | None) -> Generator[Frame, None, None]:
    if not times:
        return
    with open_media(path) as container:
        stream = _video_stream(container, path)
        check_not_truncated(container, path)
        stream.thread_type = "AUTO"
        cursor = _Cursor(container, stream, path)
        served: tuple[int, np.ndarray] | None = None  # (serial, rgb) of the last frame served
        for t in times:
            cursor.goto(t)
            if cursor.current is None:  # goto raises first; kept for the type checker
                raise MediaError(f"{path}: no decodable video frame")
            index, time_s, frame = cursor.current
            if served is not None and served[0] == cursor.serial:
                rgb = served[1].copy()  # the same frame again: a copy, so callers may edit each
            else:
                rgb = _to_rgb(frame, cursor.rotation or 0, max_side)
                served = (cursor.serial, rgb)
            yield Frame(index=index, time_s=time_s, rgb=rgb)
