"""Every GPU row of issue 17 in one call: training step, label prediction, reasoning decode and the
four encoders, each against its H200 anchor and its baseline of the same run.

The rows come from the per-workload scripts, each run in a subprocess with a share of the budget
(a row that runs past it is reported as such and the others still run):

    workload                    script (GPU arguments)                                    in-run baseline
    training step               train_step.py --preset paper --batches 8,16               the authors' step
    labels, cached features     serve_model.py --preset paper --cached-vision --batches 1,32  greedy labels
                                  --fp8 (the best of bf16 and FP8 scoring is the row's rate)
    reasoning decode, batch 1   serve_model.py ... --batches 1 --compile (static cache)   HF generate, batch 1
    4-bit weights, batch 1      serve_model.py ... --batches 1 --quantization 4bit        HF generate, batch 1
    the four encoders           encoders_gpu.py (bf16 batches, streams, FP8, compile)     fp32 eager, batch 1
    extract's three encoders    extract_encoders.py (extract's own encode: dtype,         fp32, clip by clip
                                  batched, FP8)

Printed: the measured rate, the anchor measured before on one H200 with plain Hugging Face classes
(issue 17), the goal, the ratio to the in-run baseline, MFU and peak memory where the script
reports them. The whole table is also written as JSON (``--json``).

    python benchmarks/gpu_all.py --json runs/gpu_all.json     # one H100/H200, under 8 minutes
    python benchmarks/gpu_all.py --smoke                      # tiny presets on the CPU: checks the script

The smoke run's numbers are CPU numbers of the tiny model: they check the plumbing, and the
anchors and goals mean nothing for them (the table says so).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Workload:
    name: str
    script: str
    gpu_args: tuple[str, ...]
    smoke_args: tuple[str, ...]
    #: Share of the budget this row may take.
    share: float
    unit: str
    #: H200, plain Hugging Face classes (issue 17's anchors).
    anchor: float
    goal: float | None


_SMOKE_MODEL = (
    "--preset", "tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--reason-tokens", "3",
    "--cached-vision", "--threads", "1", "--dataset-size", "20",
)  # fmt: skip
WORKLOADS = (
    Workload("training step (stage 2, cached ViT)", "train_step.py",
             ("--preset", "paper", "--device", "cuda", "--batches", "8,16", "--steps", "10"),
             ("--preset", "tiny", "--device", "cpu", "--batches", "2", "--steps", "2"),
             0.16, "samples/s", 6.87, 34.0),
    # Also converted to FP8 matmuls (--fp8) in the same run: the plain bf16 scoring rows and the
    # FP8 ones side by side, with how many labels FP8 keeps.
    Workload("labels from cached features", "serve_model.py",
             ("--preset", "paper", "--device", "cuda", "--batches", "1,32", "--cached-vision",
              "--reason-tokens", "64", "--fp8"),
             (*_SMOKE_MODEL, "--batches", "1,2", "--fp8"),
             0.22, "clips/s", 86.8, 140.0),
    Workload("reasoning decode, batch 1", "serve_model.py",
             ("--preset", "paper", "--device", "cuda", "--batches", "1", "--cached-vision", "--compile",
              "--reason-tokens", "128"),
             (*_SMOKE_MODEL, "--batches", "1", "--static-cache"),
             0.20, "tokens/s", 43.0, 200.0),
    # Small GPUs (item 3): the decode rate and peak memory with NF4 weights. The issue sets no goal
    # for it; its anchor is bfloat16 HF generate's, and the peak memory column is what it is for.
    Workload("reasoning decode, 4-bit weights", "serve_model.py",
             ("--preset", "paper", "--device", "cuda", "--batches", "1", "--cached-vision",
              "--quantization", "4bit", "--reason-tokens", "64"),
             (*_SMOKE_MODEL, "--batches", "1", "--quantization", "4bit"),
             0.11, "tokens/s", 43.0, None),
    Workload("the four encoders", "encoders_gpu.py", ("--budget-s", "100"),
             ("--tiny", "--batches", "2", "--repeats", "1", "--no-compile"),
             0.25, "clips/s", 77.7, 100.0),
    # What `extract` itself does with its three encoders (MAE, VideoMAE, HuBERT: the global ViT runs
    # in the model): before its --dtype/--batch-encoders/--fp8 options (float32, clip by clip) and
    # with them. Anchor: the three encoders' float32 eager times at batch 1 on the H200 (59.15 + 40.29
    # + 17.77 ms, encoders_gpu.py 2026-11-26); no goal of its own (the is for all four).
    Workload("extract's three encoders", "extract_encoders.py",
             ("--clips", "16", "--repeats", "2", "--budget-s", "18"),
             ("--tiny", "--repeats", "1", "--clips", "4", "--batch", "2"),
             0.06, "clips/s", 8.53, None),
)  # fmt: skip


@dataclass
class Result:
    workload: str
    unit: str
    anchor: float
    goal: float | None
    measured: float | None = None
    #: The in-run baseline's rate, in the same unit.
    baseline: float | None = None
    baseline_name: str = ""
    best: str = ""
    mfu: float | None = None
    peak_gib: float | None = None
    seconds: float = 0.0
    error: str = ""


Runs = dict[str, dict[str, Any]]  # the JSON of each workload run so far, by name


def _training(data: dict[str, Any], r: Result, runs: Runs) -> None:
    rows = data["rows"]
    best = max(rows, key=lambda x: x["samples_per_s"])
    r.measured, r.best = best["samples_per_s"], best["variant"]
    r.baseline, r.baseline_name = rows[0]["samples_per_s"], rows[0]["variant"]
    peak = best.get("peak_gib")
    r.mfu, r.peak_gib = best.get("mfu"), peak if peak is not None and peak == peak else None  # NaN: CPU


def _labels(data: dict[str, Any], r: Result, runs: Runs) -> None:
    rows = [x for x in data["rows"] if x["task"] == "label"]
    top = max(x["batch"] for x in rows)
    at_top = [x for x in rows if x["batch"] == top]
    greedy = next(x for x in at_top if not x["method"].startswith("scoring"))
    best = max((x for x in at_top if x["method"].startswith("scoring")), key=lambda x: x["rate"])
    r.measured, r.best = best["rate"], f"{best['method']}, batch {top}"
    kept = data.get("fp8_agreement")
    if kept is not None:  # FP8 scoring was timed too: how its labels compare, whichever won
        plain = next(x for x in at_top if x["method"] == "scoring")
        fp8 = next(x for x in at_top if x["method"] == "scoring, fp8")
        ratio = fp8["rate"] / plain["rate"]
        r.best += f" (fp8 {ratio:.2f}x plain scoring, kept {100 * kept:.0f}% of its labels)"
    r.baseline, r.baseline_name = greedy["rate"], f"{greedy['method']}, batch {top}"


def _decode(data: dict[str, Any], r: Result, runs: Runs) -> None:
    row = next(x for x in data["rows"] if x["task"] == "reason" and x["batch"] == 1)
    r.measured, r.best = row["rate"], f"{data['cache']} cache, compile {'on' if data['compile'] else 'off'}"
    plain = runs.get(LABELS)
    if plain is not None:  # the labels run decodes with plain HF generate
        base = next(x for x in plain["rows"] if x["task"] == "reason" and x["batch"] == 1)
        r.baseline, r.baseline_name = base["rate"], f"HF generate ({plain['cache']} cache), batch 1"


def _decode_4bit(data: dict[str, Any], r: Result, runs: Runs) -> None:
    row = next(x for x in data["rows"] if x["task"] == "reason" and x["batch"] == 1)
    r.measured, r.best, r.peak_gib = row["rate"], f"NF4 weights, {data['cache']} cache", data.get("peak_gib")
    plain = runs.get(LABELS)
    if plain is not None:
        base = next(x for x in plain["rows"] if x["task"] == "reason" and x["batch"] == 1)
        weights = str(plain["dtype"]).removeprefix("torch.")
        r.baseline, r.baseline_name = base["rate"], f"{weights} weights, HF generate, batch 1"


def _encoders(data: dict[str, Any], r: Result, runs: Runs) -> None:
    rows = data["rows"]
    best = max(rows, key=lambda x: x["clips_per_s"])
    r.measured, r.best = best["clips_per_s"], f"{best['variant']}, batch {best['batch']}"
    fp8 = next((x for x in rows if x["variant"].endswith("+ fp8")), None)
    if fp8 is not None:  # whichever won: FP8's rate against the best and how close its features stay
        r.best += f" (fp8 {fp8['clips_per_s'] / best['clips_per_s']:.2f}x of it; {fp8['note']})"
    r.baseline, r.baseline_name = rows[0]["clips_per_s"], rows[0]["variant"]


def _extract(data: dict[str, Any], r: Result, runs: Runs) -> None:
    rows = data["rows"]
    best = max(rows, key=lambda x: x["clips_per_s"])
    r.measured = best["clips_per_s"]
    r.best = f"{best['variant']} (least feature cosine to the first row {best['least_cosine']:.4f})"
    r.baseline, r.baseline_name = rows[0]["clips_per_s"], rows[0]["variant"]


LABELS = WORKLOADS[1].name
PARSERS: dict[str, Callable[[dict[str, Any], Result, Runs], None]] = {
    WORKLOADS[0].name: _training,
    LABELS: _labels,
    WORKLOADS[2].name: _decode,
    WORKLOADS[3].name: _decode_4bit,
    WORKLOADS[4].name: _encoders,
    WORKLOADS[5].name: _extract,
}


def run_workload(
    w: Workload, smoke: bool, timeout: float, out: Path
) -> tuple[dict[str, Any] | None, str, float]:
    """The script's JSON (or ``None``), an error text, and the seconds it took."""
    args = [
        sys.executable,
        str(HERE / w.script),
        *(w.smoke_args if smoke else w.gpu_args),
        "--json",
        str(out),
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        # the scripts rewrite their JSON after every row: keep the rows measured before the cut
        seconds, partial = time.perf_counter() - t0, _read_json(out)
        kept = len(partial["rows"]) if partial and partial.get("rows") else 0
        if not kept:
            return None, f"past its {timeout:.0f} s share of the budget", seconds
        return partial, f"past its {timeout:.0f} s share of the budget; {kept} rows kept", seconds
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"exit {proc.returncode}: {tail[0][:200]}", seconds
    return json.loads(out.read_text()), "", seconds


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def measure(smoke: bool, budget_s: float, only: set[str] | None = None) -> list[Result]:
    results: list[Result] = []
    runs: Runs = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, w in enumerate(WORKLOADS):
            r = Result(w.name, w.unit, w.anchor, w.goal)
            results.append(r)
            if only is not None and w.script.split(".")[0] not in only and str(i) not in only:
                r.error = "not run (--only)"
                continue
            left = budget_s - (time.perf_counter() - start)
            data, r.error, r.seconds = run_workload(
                w, smoke, min(w.share * budget_s, left), Path(tmp) / f"{i}.json"
            )
            if data is None:
                continue
            try:
                PARSERS[w.name](data, r, runs)
            except (KeyError, StopIteration, ValueError, TypeError, ZeroDivisionError) as exc:
                # rows missing from a cut run (or a changed script): this row only, the table stays
                r.measured = None
                lacks = f"its output lacks what the row needs ({exc!r})"
                r.error = f"{r.error}; {lacks}" if r.error else lacks
                continue
            runs[w.name] = data
    return results


def _goal(r: Result) -> str:
    return "-" if r.goal is None else f"{r.goal:g}"


def print_table(results: list[Result], smoke: bool) -> None:
    print(f"{'workload':<38}{'measured':>11}  {'unit':<10}{'anchor':>8}{'goal':>8}{'vs anchor':>11}"
          f"{'vs in-run':>11}{'MFU':>7}{'peak GiB':>10}{'s':>6}  best / in-run baseline")  # fmt: skip
    for r in results:
        if r.measured is None:
            print(f"{r.workload:<38}{'-':>11}  {r.unit:<10}{r.anchor:>8g}{_goal(r):>8}  {r.error}")
            continue
        vs_anchor = "-" if smoke else f"{r.measured / r.anchor:.2f}x"
        vs_base = f"{r.measured / r.baseline:.2f}x" if r.baseline else "-"
        mfu = f"{100 * r.mfu:.0f}%" if r.mfu is not None else "-"
        peak = f"{r.peak_gib:.1f}" if r.peak_gib is not None else "-"
        rates = f"{r.measured:>11.2f}  {r.unit:<10}{r.anchor:>8g}{_goal(r):>8}{vs_anchor:>11}{vs_base:>11}"
        cut = f" [{r.error}]" if r.error else ""  # a run cut at its share: the rows it had
        against = f"{r.best} / {r.baseline_name or '-'}{cut}"
        print(f"{r.workload:<38}{rates}{mfu:>7}{peak:>10}{r.seconds:>6.0f}  {against}")
    if smoke:
        print("smoke run: tiny models on the CPU; the anchors and goals are H200 figures and do not apply")
    else:
        goals = [r for r in results if r.goal is not None]
        met = [r.workload for r in goals if r.measured is not None and r.measured >= r.goal]
        print(f"goals met: {len(met)} of {len(goals)}" + (f" ({', '.join(met)})" if met else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny presets on the CPU (checks the script)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="seconds for all rows together")
    ap.add_argument(
        "--only",
        help="comma-separated scripts (train_step, serve_model, encoders_gpu, extract_encoders)"
        " or row numbers",
    )
    ap.add_argument("--json", help="also write the table here")
    args = ap.parse_args()
    if not args.smoke:
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run with --smoke to check the script on the CPU")
    only = set(args.only.split(",")) if args.only else None
    results = measure(args.smoke, args.budget_s, only)
    print_table(results, args.smoke)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"smoke": args.smoke, "rows": [asdict(r) for r in results]}, indent=2)
        )


if __name__ == "__main__":
    main()
