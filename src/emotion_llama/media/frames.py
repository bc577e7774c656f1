"""One RGB frame from an image or a video file (PyAV), decoded lazily: the first frame costs one
packet, the middle frame one seek; no clip is ever decoded whole into memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emotion_llama.errors import EmotionLlamaError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class MediaError(EmotionLlamaError):
    """A media file cannot be read; the message names it."""


def read_frame(path: str | Path, which: str = "first") -> np.ndarray:
    """(H, W, 3) uint8 RGB. ``which``: ``first`` or ``middle`` (images ignore it)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: the file is empty (0 bytes)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise MediaError(f"{path}: not a readable image ({exc})") from None
    if which not in ("first", "middle"):
        raise MediaError(f"frame choice {which!r} is not available here; use 'first' or 'middle'")
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            if which == "middle" and stream.duration and stream.time_base:
                container.seek(stream.duration // 2, stream=stream)
            for frame in container.decode(stream):
                return frame.to_ndarray(format="rgb24")
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: not a readable video ({exc})") from None
    raise MediaError(f"{path}: no decodable video frame")
