"""The audio track of a media file as float32 mono at a chosen rate (PyAV's resampler)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emotion_llama.errors import ConfigError, MediaError
from emotion_llama.media.video import check_not_truncated, checked_path, open_media

if TYPE_CHECKING:
    import av
    from av.container import InputContainer


class NoAudioError(MediaError):
    """The file decodes but has no audio stream."""


def _audio_stream(container: InputContainer) -> av.AudioStream | None:
    return container.streams.audio[0] if container.streams.audio else None


def _declared_samples(stream: av.AudioStream, sample_rate: int) -> int | None:
    if not stream.duration or not stream.time_base:
        return None
    return round(float(stream.duration * stream.time_base) * sample_rate)


def _padding_limit(stream: av.AudioStream, sample_rate: int) -> int:
    """The most samples (at ``sample_rate``) that can be end padding: one codec frame, so that a
    header that understates the duration never cuts real audio by more than that."""
    frame_size = stream.codec_context.frame_size or 0
    in_rate = stream.rate or stream.codec_context.sample_rate or sample_rate
    return math.ceil(max(frame_size, 2048) * sample_rate / in_rate)


class AudioCollector:
    """The audio of one stream as :func:`load_audio` returns it, from its decoded frames in order:
    :meth:`add` each frame, then :meth:`finish`. Shared by ``load_audio`` and the one-pass clip
    reader (:class:`~emotion_llama.media.clip.ClipDecoder`), so both give the same samples."""

    def __init__(self, stream: av.AudioStream, sample_rate: int) -> None:
        import av

        self.stream = stream
        self.sample_rate = sample_rate
        # Packed float mono: one row per output frame, and swresample does the downmix and the
        # band-limited rate conversion in one pass.
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        self._chunks: list[np.ndarray] = []

    def add(self, frame: av.AudioFrame) -> None:
        for out in self._resampler.resample(frame):
            self._chunks.append(out.to_ndarray().reshape(-1))

    def finish(self) -> np.ndarray:
        """(n,) float32 mono in [-1, 1]: the samples still buffered in the resampler flushed, the
        codec's end padding cut."""
        for out in self._resampler.resample(None):  # the samples still buffered in the filter
            self._chunks.append(out.to_ndarray().reshape(-1))
        chunks, self._chunks = self._chunks, []
        stream, sample_rate = self.stream, self.sample_rate
        declared = _declared_samples(stream, sample_rate)
        audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
        if declared is not None and 0 < audio.size - declared <= _padding_limit(stream, sample_rate):
            # Frame-based codecs (AAC: 1024 samples) pad the last frame with silence and FFmpeg does
            # not trim it; the header's duration says where the real signal ends.
            audio = audio[:declared]
        # Float codecs and the downmix can overshoot full scale slightly; callers rely on [-1, 1].
        np.clip(audio, -1.0, 1.0, out=audio)
        return audio


def check_sample_rate(sample_rate: object, caller: str) -> int:
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ConfigError(f"{caller}: sample_rate must be a positive integer, got {sample_rate!r}")
    return sample_rate


def audio_stream(container: InputContainer, path: Path) -> av.AudioStream:
    """The file's first audio stream; :class:`NoAudioError` when it has none."""
    stream = _audio_stream(container)
    if stream is None:
        raise NoAudioError(f"{path}: has no audio stream")
    return stream


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """(n,) float32 mono in [-1, 1] at ``sample_rate``; empty when the stream holds no samples.

    :class:`NoAudioError` when there is no audio stream, :class:`MediaError` when the file is
    missing, unreadable or truncated."""
    check_sample_rate(sample_rate, "load_audio")
    path = checked_path(path)
    with open_media(path) as container:
        stream = audio_stream(container, path)
        check_not_truncated(container, path)
        collector = AudioCollector(stream, sample_rate)
        for frame in container.decode(stream):
            collector.add(frame)
        return collector.finish()


def audio_duration(path: str | Path) -> float | None:
    """Seconds of audio from the headers (without decoding); ``None`` when there is no audio
    stream. :class:`MediaError` when the file is missing or unreadable."""
    path = checked_path(path)
    with open_media(path) as container:
        stream = _audio_stream(container)
        if stream is None:
            return None
        check_not_truncated(container, path)
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        # Matroska and raw streams keep no per-stream duration: demux the packets (cheap, no
        # decoding) rather than trusting the container's, which also covers the video.
        lo, hi = math.inf, -math.inf
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            t = float(packet.pts * stream.time_base)
            lo = min(lo, t)
            hi = max(hi, t + float((packet.duration or 0) * stream.time_base))
        if hi > lo:
            return hi - lo
        return container.duration / 1_000_000 if container.duration else None
