"""benchmarks/gpu_all.py, the one-call GPU benchmark of issue 17, run end to end in its smoke mode
(tiny presets on the CPU): every row measured and parsed, the table and its JSON written. The GPU
run takes the same path with the paper preset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_all.py"


@pytest.mark.slow
def test_gpu_all_smoke_run_measures_and_parses_every_row(tmp_path: Path) -> None:
    out = tmp_path / "gpu_all.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["workload"] for r in rows] == [
        "training step (stage 2, cached ViT)", "labels from cached features", "reasoning decode, batch 1",
        "reasoning decode, 4-bit weights", "the four encoders", "extract's three encoders",
    ]  # fmt: skip
    for r in rows:
        assert r["error"] == "" and r["measured"] > 0 and r["baseline"] > 0, r
    labels = rows[1]["best"]  # the best of bf16 and FP8 scoring, with FP8's ratio and agreement
    assert labels.startswith("scoring") and "fp8" in labels and "of its labels" in labels
    assert "fp8" in rows[4]["best"] and "least cosine to plain" in rows[4]["best"]
    assert rows[2]["best"].startswith("static cache") and rows[2]["baseline_name"].startswith("HF generate")
    assert rows[3]["best"].startswith("NF4 weights") and rows[3]["goal"] is None
    assert "least feature cosine to the first row" in rows[5]["best"]
    assert rows[5]["baseline_name"] == "float32, clip by clip (before)"
    assert "anchors and goals are H200 figures" in proc.stdout
    assert "training step (stage 2, cached ViT)" in proc.stdout


def test_gpu_all_refuses_to_run_without_a_gpu_unless_smoke() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the real run would start")
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "run with --smoke" in proc.stderr
