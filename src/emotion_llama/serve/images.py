"""The pictures of an analysis, as data URLs: the peak frame (JPEG) and the AU timeline (PNG)."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

from emotion_llama.serve.predictor import Analysis

log = logging.getLogger("emotion_llama.serve")


def jpeg_data_url(frame: Any) -> str | None:
    """An (H, W, 3) RGB frame as a ``data:image/jpeg;base64,`` URL; ``None`` for ``None``."""
    if frame is None:
        return None
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def render_images(a: Analysis, work: Path) -> tuple[str | None, str | None]:
    """The peak frame as a JPEG data URL and the AU timeline as a PNG data URL (``None`` each when
    the clip has none)."""
    jpeg = jpeg_data_url(a.peak_frame)
    png = None
    if a.timeline is not None and len(a.timeline):
        from emotion_llama.perception.action_units import plot_au_timeline

        peak = a.record.get("peak_index")
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            path = plot_au_timeline(a.timeline, Path(tmp) / "au.png", peak=peak, title=a.name)
            png = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    return jpeg, png


async def analysis_images(a: Analysis, work: Path) -> tuple[str | None, str | None]:
    """:func:`render_images` in a worker thread; ``None`` for both when it fails (the images are
    extras: the analysis stands without them)."""
    try:
        return await asyncio.to_thread(render_images, a, work)
    except Exception:
        log.exception("rendering the images of %s failed", a.name)
        return None, None


async def peak_frame_jpeg(a: Analysis) -> str | None:
    """:func:`jpeg_data_url` of the peak frame in a worker thread; ``None`` when it fails."""
    try:
        return await asyncio.to_thread(jpeg_data_url, a.peak_frame)
    except Exception:  # an extra: the answer stands without it
        log.exception("encoding the peak frame of %s failed", a.name)
        return None
