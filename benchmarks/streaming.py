"""Streaming costs that used to be asserted in the tests, each against a baseline from the same run.

(a) Memory: while ``media.video.iter_frames`` streams every frame of a long generated H.264 video
(600 frames of 160x120 by default, 33 MiB as RGB) against decoding every frame into a list (what
streaming avoids), each way in a fresh process: the peak traced by ``tracemalloc`` (what the old
test asserted) and the growth of the peak resident set (``/proc/self/status`` VmHWM, reset through
``/proc/self/clear_refs``; Linux only), in MiB, in frames' worth of RGB bytes and as a ratio to the
list. A third row, the first frame only, is the decoder's fixed cost. ``tracemalloc`` cannot see
the pixels (PyAV's ``to_ndarray`` is a view of libav's buffer), so only the resident set shows the
list's 600 frames; the script says so when it happens.

(b) Time: ``perception.prosody.measure_prosody`` on one clip, warm (openSMILE and the VAD built
by an earlier call) against the cold first call of this process, which builds them (their Python
modules are imported, and timed, before it); also with openSMILE rebuilt before every call (the
regression a warm call must not have). Warm and rebuilt calls are timed in alternation.
The clip is pocketsphinx's LibriVox sample the tests use (3.3 s) when it is installed, else a
generated voice-like tone in noise of 3.3 s at 16 kHz; the output says which.

    PYTHONPATH=src python benchmarks/streaming.py
    PYTHONPATH=src python benchmarks/streaming.py --frames 1200 --repeats 10 --synthetic
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

LIBRIVOX_CLIP = Path(
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0930.wav"
)


# -- (a) memory while streaming frames ---------------------------------------------------------------
def write_video(path: Path, n: int, size: tuple[int, int], rate: int) -> Path:
    """H.264 MP4 of ``n`` frames, each a flat colour of its own (as the media tests write them)."""
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            rgb = np.full((h, w, 3), (16 * (i % 16) + 8, 16 * ((i // 16) % 16) + 8, 128), np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def child(way: str, video: str, measure: str) -> None:
    """One way over the video in this fresh process; prints ``frames bytes``: the peak traced by
    ``tracemalloc``, or the growth of the peak resident set over the resident set before it."""
    from emotion_llama.media.video import iter_frames

    def run() -> int:
        if way == "list":
            return len(list(iter_frames(video)))
        if way == "first":
            frames = iter_frames(video)
            next(frames)
            frames.close()
            return 1
        count = 0
        for _ in iter_frames(video):
            count += 1
        return count

    if measure == "traced":
        tracemalloc.start()
        count = run()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(count, peak)
        return
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from here
    before = _status_kib("VmRSS")
    count = run()
    print(count, (_status_kib("VmHWM") - before) * 1024)


def in_child(way: str, video: Path, measure: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", way, str(video), measure],
        capture_output=True,
        text=True,
        check=True,
    )
    count, peak = out.stdout.split()
    return int(count), int(peak)


def memory_table(frames: int, size: tuple[int, int], rate: int) -> None:
    frame_bytes = size[0] * size[1] * 3
    rss = Path("/proc/self/clear_refs").exists()
    ways = [
        ("list", "every frame into a list (baseline)"),
        ("stream", "`iter_frames`, streamed"),
        ("first", "the first frame only (the decoder's fixed cost)"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "long.mp4", frames, size, rate)
        print(
            f"(a) {frames} frames of {size[0]}x{size[1]} at {rate} fps, "
            f"{frames * frame_bytes / 2**20:.1f} MiB as RGB, file {path.stat().st_size / 2**10:.0f} KiB; "
            "each way in a fresh process"
        )
        rows = []
        for way, name in ways:
            count, traced = in_child(way, path, "traced")
            grown = in_child(way, path, "rss")[1] if rss else None
            assert count == (1 if way == "first" else frames), (name, count)
            rows.append((name, count, traced, grown))
    base_traced, base_rss = rows[0][2], rows[0][3]
    head = [
        "way",
        "frames",
        "traced peak MiB",
        "in frames",
        "vs list",
        "peak RSS growth MiB",
        "in frames",
        "vs list",
    ]
    print("\n| " + " | ".join(head) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for name, count, traced, grown in rows:
        cells = [
            name,
            str(count),
            f"{traced / 2**20:.2f}",
            f"{traced / frame_bytes:.1f}",
            f"{traced / base_traced:.3f}x",
        ]
        if grown is None or not base_rss:
            cells += ["", "", ""]
        else:
            cells += [f"{grown / 2**20:.2f}", f"{grown / frame_bytes:.1f}", f"{grown / base_rss:.3f}x"]
        print("| " + " | ".join(cells) + " |")
    if base_traced < frames * frame_bytes:
        print(
            "\ntracemalloc does not see the frames' pixels: PyAV's to_ndarray returns a view of a buffer "
            "libav allocated, so the traced peak counts only Python objects; the resident set counts both."
        )


# -- (b) per-clip prosody time -----------------------------------------------------------------------
def clip(synthetic: bool) -> tuple[np.ndarray, str]:
    if not synthetic and LIBRIVOX_CLIP.is_file():
        from emotion_llama.media.audio import load_audio

        audio = load_audio(LIBRIVOX_CLIP, 16000)
        return audio, f"LibriVox {LIBRIVOX_CLIP.name} ({audio.size / 16000:.1f} s)"
    rate, seconds = 16000, 3.3
    t = np.arange(round(rate * seconds)) / rate
    pitch = 120.0 + 20.0 * np.sin(2 * np.pi * 0.7 * t)  # a slowly gliding voice-like pitch
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))  # harmonics of a glottal buzz
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0.0, None)  # about 4 syllables a second
    noise = np.random.default_rng(0).standard_normal(t.size)
    audio = 0.25 * voiced * syllables + 0.01 * noise
    return audio.astype(np.float32), f"generated tone in noise ({seconds} s at {rate} Hz)"


def seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def prosody_table(repeats: int, synthetic: bool) -> None:
    audio, label = clip(synthetic)
    print(f"\n(b) `measure_prosody` on {label}, {repeats} warm calls")
    t0 = time.perf_counter()
    import faster_whisper.vad  # noqa: F401  (imported here so that the cold call times builds, not imports)
    import opensmile  # noqa: F401

    from emotion_llama.perception import prosody

    print(
        f"importing openSMILE, faster-whisper's VAD and the prosody module: {time.perf_counter() - t0:.2f} s"
    )
    result: list[Any] = []
    cold = seconds(lambda: result.append(prosody.measure_prosody(audio)))
    if result[0] is None:
        print("the clip holds no voiced speech by the prosody gates: openSMILE never ran, no timing")
        return
    rebuild = getattr(getattr(prosody, "_smile", None), "cache_clear", None)

    def rebuilt() -> None:
        rebuild()
        prosody.measure_prosody(audio)

    warm, fresh = [], []
    for _ in range(repeats):  # in alternation, so that a loaded machine slows both alike
        warm.append(seconds(lambda: prosody.measure_prosody(audio)))
        if rebuild is not None:
            fresh.append(seconds(rebuilt))
    rows = [("cold: first call, builds openSMILE and loads the VAD (baseline)", [cold])]
    if fresh:
        rows.append(("openSMILE rebuilt before each call", fresh))
    rows.append(("warm: openSMILE built once", warm))
    print("\n| call | calls | min ms | median ms | median vs cold |")
    print("|---|---|---|---|---|")
    for name, times in rows:
        median = statistics.median(times)
        print(
            f"| {name} | {len(times)} | {min(times) * 1e3:.1f} | {median * 1e3:.1f} | {median / cold:.3f}x |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=600, help="frames of the generated video")
    ap.add_argument("--size", default="160x120", help="frame size, WxH")
    ap.add_argument("--rate", type=int, default=50, help="frame rate of the generated video")
    ap.add_argument("--repeats", type=int, default=5, help="warm prosody calls")
    ap.add_argument(
        "--synthetic", action="store_true", help="the generated clip even with LibriVox installed"
    )
    ap.add_argument("--only", choices=("memory", "prosody"), help="run one of the two")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # WAY VIDEO MEASURE, for memory_table
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    w, h = (int(v) for v in a.size.lower().split("x"))
    if a.only != "prosody":
        memory_table(a.frames, (w, h), a.rate)
    if a.only != "memory":
        prosody_table(a.repeats, a.synthetic)


if __name__ == "__main__":
    main()
