"""The API server against the CLI on the CPU with the offline defaults (paper preset, clue
pipeline, the offline SmolLM2 LLM), in one run:

- ``serve``: ``emotion-llama serve`` started once (its start-up and model load timed apart), then
  ``POST /v1/analyze`` for N clips one after the other, and a few at once;
- ``cli``: ``emotion-llama analyze CLIP`` once per clip, so every clip pays for starting Python and
  loading the models again.

Requests per second, p50 and p95 latency (with few requests p95 is close to the slowest), and the
ratios against the CLI. No answer cache anywhere: every request runs the LLM.

    python benchmarks/serve.py [--clips 4] [--concurrent 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from emotion_llama.media.samples import SAMPLE_SENTENCES, make_speaking_clip, real_media_dir


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(base: str, clip: Path) -> float:
    t0 = time.perf_counter()
    with httpx.Client(timeout=600) as c:
        r = c.post(f"{base}/v1/analyze", files={"file": (clip.name, clip.read_bytes(), "video/mp4")})
    r.raise_for_status()
    assert r.json()["label"] is not None
    return time.perf_counter() - t0


def row(name: str, latencies: list[float], wall: float, base_rps: float | None) -> list[str]:
    rps = len(latencies) / wall
    ratio = f"{rps / base_rps:.2f}x" if base_rps else "1.00x"
    return [
        name,
        str(len(latencies)),
        f"{wall:.1f}",
        f"{rps:.3f}",
        f"{percentile(latencies, 0.5):.2f}",
        f"{percentile(latencies, 0.95):.2f}",
        ratio,
    ]


def serve_run(
    clips: list[Path], args: argparse.Namespace, env: dict[str, str], extra: list[str], *, sequential: bool
) -> tuple[float, list[float], float, list[float], float]:
    """Start ``emotion-llama serve`` (``extra`` flags), time its start-up, the sequential requests
    (when asked) and the concurrent ones, and stop it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "emotion_llama.cli",
        "serve",
        "--port",
        str(port),
        "--max-queue",
        "32",
        *extra,
    ]
    t0 = time.perf_counter()
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status = None
        while status != "ok":
            if server.poll() is not None or time.perf_counter() - t0 > 600:
                raise SystemExit("the server did not come up")
            with contextlib.suppress(httpx.HTTPError):
                status = httpx.get(f"{base}/health", timeout=5).json()["status"]
            time.sleep(0.25)
        startup = time.perf_counter() - t0
        seq: list[float] = []
        t0 = time.perf_counter()
        if sequential:
            seq = [post(base, clip) for clip in clips[: args.clips]]
        seq_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrent) as pool:
            conc = list(pool.map(lambda c: post(base, c), clips[: args.concurrent]))
        conc_wall = time.perf_counter() - t0
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    return startup, seq, seq_wall, conc, conc_wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4, help="Clips (= sequential requests and CLI runs).")
    ap.add_argument("--concurrent", type=int, default=3, help="Requests sent at once.")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    face = real_media_dir() / "WolfgangLanger_Pexels.mp4"

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = [
            make_speaking_clip(
                face,
                SAMPLE_SENTENCES[i % len(SAMPLE_SENTENCES)],
                root / f"clip_{i}.mp4",
                start=(2.0 * i) % 14,
                seconds=args.seconds,
            )
            for i in range(max(args.clips, args.concurrent))
        ]

        # -- the server, started once (batching on, the default), then once more without batching
        startup, seq, seq_wall, conc, conc_wall = serve_run(clips, args, env, [], sequential=True)
        _, _, _, unb, unb_wall = serve_run(clips, args, env, ["--max-batch", "1"], sequential=False)

        # -- the CLI, once per clip
        cli: list[float] = []
        for i, clip in enumerate(clips[: args.clips]):
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "emotion_llama.cli", "analyze", str(clip), "--json", f"cli_{i}.json"],
                env=env, cwd=root, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            cli.append(time.perf_counter() - t0)
        cli_wall = sum(cli)

    cli_rps = len(cli) / cli_wall
    rows = [
        row("emotion-llama analyze, one process per clip", cli, cli_wall, None),
        row("serve: /v1/analyze sequential", seq, seq_wall, cli_rps),
        row(f"serve: /v1/analyze {args.concurrent} at once, --max-batch 1", unb, unb_wall, cli_rps),
        row(f"serve: /v1/analyze {args.concurrent} at once, batched (default)", conc, conc_wall, cli_rps),
    ]
    header = ["mode", "requests", "wall s", "req/s", "p50 s", "p95 s", "req/s vs CLI"]
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    cpu = f"CPU, {os.cpu_count()} cores; {args.seconds:g}-second clips"
    print(f"{cpu}; server start-up + model load {startup:.1f} s")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    print(
        f"p50 latency: serve {percentile(seq, 0.5):.2f} s vs CLI {percentile(cli, 0.5):.2f} s "
        f"({percentile(cli, 0.5) / percentile(seq, 0.5):.2f}x faster per clip once loaded)"
    )


if __name__ == "__main__":
    main()
