"""One pass over a clip for every consumer: the video frames at the analysis rate and the whole audio
track, from one open container and one walk through its packets.

``iter_frames(path, fps=...)`` and ``load_audio(path)`` each open the file, check it and demux all
of it; perception needs both, so :class:`ClipDecoder` demuxes the video and audio packets together,
in file order, and feeds each to its own decoder. The frames are picked by the same
:class:`~emotion_llama.media.video.FrameSampler` as ``iter_frames`` and the samples collected by the
same :class:`~emotion_llama.media.audio.AudioCollector` as ``load_audio``, so the results are the
same arrays (``tests/test_media.py`` checks it bit for bit)::

    clip = ClipDecoder(path, fps=10, sample_rate=16000)
    for frame in clip.frames():   # video frames as they are decoded, audio collected meanwhile
        ...
    audio = clip.audio()          # after the pass; NoAudioError without an audio stream
"""

from __future__ import annotations

import math
from collections.abc import Generator
from pathlib import Path

import numpy as np

from emotion_llama.errors import ConfigError, MediaError
from emotion_llama.media.audio import AudioCollector, NoAudioError, check_sample_rate
from emotion_llama.media.video import Frame, FrameSampler, checked_path, open_media, video_stream


class ClipDecoder:
    """The video frames (as ``iter_frames(path, fps=fps, max_side=max_side)``) and the audio (as
    ``load_audio(path, sample_rate)``) of one file, decoded in a single pass. ``sample_rate=None``
    leaves the audio out (its packets are not even demuxed)."""

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float | None = None,
        sample_rate: int | None = 16000,
        max_side: int | None = None,
    ) -> None:
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise ConfigError(f"ClipDecoder: fps must be a positive number, got {fps!r}")
        if max_side is not None and max_side < 1:
            raise ConfigError(f"ClipDecoder: max_side must be >= 1, got {max_side!r}")
        self.sample_rate = None if sample_rate is None else check_sample_rate(sample_rate, "ClipDecoder")
        self.path = checked_path(path)
        self.fps = fps
        self.max_side = max_side
        self._audio: np.ndarray | None = None
        self._audio_problem: str | None = None
        self._done = False

    def frames(self) -> Generator[Frame, None, None]:
        """The chosen video frames, in order; the audio is decoded along the way. One pass only:
        :class:`MediaError` if called again."""
        if self._done:
            raise MediaError(f"{self.path}: ClipDecoder.frames() was already run")
        self._done = True
        path = self.path
        with open_media(path) as container:
            video = video_stream(container, path)  # also checks every stream for truncation
            sampler = FrameSampler(video, self.fps, self.max_side)
            collector = None
            if self.sample_rate is not None:
                if container.streams.audio:
                    collector = AudioCollector(container.streams.audio[0], self.sample_rate)
                else:
                    self._audio_problem = f"{path}: has no audio stream"
            streams = [video] if collector is None else [video, collector.stream]
            # demux yields each stream's packets in file order, then one empty packet per stream
            # that flushes its decoder: what ``container.decode(stream)`` does for one stream.
            for packet in container.demux(*streams):
                if packet.stream is video:
                    for frame in packet.decode():
                        kept = sampler(frame)
                        if kept is not None:
                            yield kept
                elif collector is not None:
                    for frame in packet.decode():
                        collector.add(frame)
            if sampler.index < 0:
                raise MediaError(f"{path}: no decodable video frame")
            if collector is not None:
                self._audio = collector.finish()

    def audio(self) -> np.ndarray:
        """The audio track, once :meth:`frames` has run to its end: (n,) float32 mono in [-1, 1],
        empty when the stream holds no samples. :class:`NoAudioError` without an audio stream."""
        if self.sample_rate is None:
            raise ConfigError("ClipDecoder: built with sample_rate=None, so without its audio")
        if self._audio_problem is not None:
            raise NoAudioError(self._audio_problem)
        if self._audio is None:
            raise MediaError(f"{self.path}: the audio is read with the frames: run frames() to the end first")
        return self._audio
