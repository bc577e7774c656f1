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


FAKE = """
import sys, time
sys.path.insert(0, {bench!r})
from timing import write_json
out = sys.argv[sys.argv.index("--json") + 1]
rows = []
for i in range(5):
    rows.append({{"samples_per_s": 10.0 + i, "variant": f"row {{i}}"}})
    write_json(out, {{"rows": rows, "partial": True}})
    if i == 1:
        time.sleep(60)  # cut here by the share of the budget
"""


def _gpu_all(monkeypatch, tmp_path):
    bench = str(SCRIPT.parent)
    monkeypatch.syspath_prepend(bench)
    import gpu_all

    (tmp_path / "fake.py").write_text(FAKE.format(bench=bench))
    monkeypatch.setattr(gpu_all, "HERE", tmp_path)
    return gpu_all


def test_a_run_cut_at_its_share_keeps_the_rows_it_measured(monkeypatch, tmp_path) -> None:
    gpu_all = _gpu_all(monkeypatch, tmp_path)
    w = gpu_all.Workload("fake training", "fake.py", (), (), 1.0, "samples/s", 6.87, None)
    data, error, seconds = gpu_all.run_workload(w, True, 8.0, tmp_path / "out.json")
    assert data is not None and [r["variant"] for r in data["rows"]] == ["row 0", "row 1"]
    assert error == "past its 8 s share of the budget; 2 rows kept" and seconds < 30
    r = gpu_all.Result(w.name, w.unit, w.anchor, w.goal)
    gpu_all._training(data, r, {})
    assert r.measured == 11.0 and r.baseline == 10.0


def test_a_row_whose_output_lacks_what_it_needs_does_not_stop_the_table(monkeypatch, tmp_path, capsys):
    gpu_all = _gpu_all(monkeypatch, tmp_path)
    (tmp_path / "fake.py").write_text(
        f"import sys\nsys.path.insert(0, {str(SCRIPT.parent)!r})\nfrom timing import write_json\n"
        "write_json(sys.argv[sys.argv.index('--json') + 1], {'rows': [{'unexpected': 1}]})\n"
    )
    two = (
        gpu_all.Workload("broken", "fake.py", (), (), 0.5, "samples/s", 6.87, None),
        gpu_all.Workload("also broken", "fake.py", (), (), 0.5, "samples/s", 6.87, None),
    )
    monkeypatch.setattr(gpu_all, "WORKLOADS", two)
    monkeypatch.setattr(gpu_all, "PARSERS", {w.name: gpu_all._training for w in two})
    results = gpu_all.measure(True, 60.0)
    assert [r.measured for r in results] == [None, None]
    assert all("its output lacks what the row needs" in r.error for r in results)
    gpu_all.print_table(results, True)
    assert capsys.readouterr().out.count("its output lacks") == 2
