"""One RGB frame from an image or a video file, decoded lazily (see ``media.video``): the first
frame costs one packet, the middle frame one seek; no clip is ever decoded whole into memory.
Video frames come out as displayed (rotation metadata applied)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emotion_llama.errors import MediaError

__all__ = ["IMAGE_SUFFIXES", "MediaError", "read_frame"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


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
    from emotion_llama.media.video import iter_frames, probe_video, read_frames_at, sample_times

    if which == "first":
        # Only the first frame is decoded; closing the generator closes the container at once.
        frames = iter_frames(path)
        try:
            return next(frames).rgb
        finally:
            frames.close()
    # The frame at the middle presentation time: one seek plus the frames from its keyframe.
    info = probe_video(path)
    return read_frames_at(path, sample_times(info, "middle"))[0].rgb
