"""Open-vocabulary emotion metric: speed of `emotion_llama.evaluate.openvocab` against a baseline.

Usage:
    python benchmarks/score.py --wheels ../shared/data/emotion_wheel [--n 100000] [--seed 0]

Both implementations score the same synthetic predictions (wheel words, their word forms and
synonyms, a few out-of-vocabulary words; strings and lists; random case) against synthetic golds,
and the script asserts that they give identical scores (both average with math.fsum, so the
numbers must match bit for bit).

The baseline is a deliberately straightforward per-sample scorer written the way the reference
toolkit works: it parses the tables once, then for every word of every sample on every wheel it
recomputes the mapping from the raw tables (word form -> lemmas, union of their synonym targets,
sort, first candidate on the wheel). When that would take longer than --baseline-budget seconds
on all samples it runs on a leading subsample and its time is extrapolated linearly (the table
says so).
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

from emotion_llama.evaluate.openvocab import EmotionWheels, ov_scores

WHEELS = ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5")


# ---------------------------------------------------------------- the baseline


def baseline_split(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    text = str(value).strip()
    if text.startswith("["):
        text = text[1:]
    if text.endswith("]"):
        text = text[:-1]
    return [item.strip() for item in re.split(r"[,'\"]", text) if item.strip()]


class BaselineScorer:
    """Parses the raw tables into plain dicts; maps every word again each time it meets it."""

    def __init__(self, folder: Path) -> None:
        self.word_forms: dict[str, set[str]] = {}
        with (folder / "format.csv").open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                name = row["name"].strip().lower()
                self.word_forms.setdefault(name, set()).add(name)
                for item in baseline_split(row["format"]):
                    self.word_forms.setdefault(item.lower(), set()).add(name)
        self.synonyms: dict[str, set[str]] = {}
        with (folder / "synonym.csv").open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        for k in range(1, 9):
            for row in rows:
                word = row[f"word_run{k}"].strip().lower()
                if not word:
                    continue
                self.synonyms.setdefault(word, set()).add(word)
                for synonym in baseline_split(row[f"synonym_run{k}"]):
                    self.synonyms.setdefault(synonym.lower(), set()).add(word)
        self.wheels: dict[str, dict[str, str]] = {}
        for wheel in WHEELS:
            mapping: dict[str, str] = {}
            last = {"level1": "", "level2": "", "level3": ""}
            with (folder / f"{wheel}.csv").open(newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    for level in last:
                        last[level] = row[level].strip().lower() or last[level]
                    for level in last:
                        if last[level]:
                            mapping[last[level]] = last["level1"]
            self.wheels[wheel] = mapping

    def map_word(self, word: str, wheel: str) -> str | None:
        word = word.strip().lower()
        if word not in self.word_forms:
            return None
        candidates: set[str] = set()
        for lemma in self.word_forms[word]:
            candidates |= self.synonyms.get(lemma, set())
        for candidate in sorted(candidates):
            if candidate in self.wheels[wheel]:
                return self.wheels[wheel][candidate]
        return None

    def map_list(self, labels: Any, wheel: str) -> set[str]:
        mapped = set()
        for word in baseline_split(labels):
            sector = self.map_word(word, wheel)
            if sector is not None:
                mapped.add(sector)
        return mapped

    def score(self, golds: list[Any], preds: list[Any]) -> dict[str, Any]:
        per_wheel = {}
        for wheel in WHEELS:
            precisions, recalls = [], []
            for gold, pred in zip(golds, preds, strict=True):
                g = self.map_list(gold, wheel)
                p = self.map_list(pred, wheel)
                if len(g) == 0:
                    continue
                if len(p) == 0:
                    precisions.append(0.0)
                    recalls.append(0.0)
                    continue
                precisions.append(len(g & p) / len(p))
                recalls.append(len(g & p) / len(g))
            precision = math.fsum(precisions) / len(precisions) if precisions else math.nan
            recall = math.fsum(recalls) / len(recalls) if recalls else math.nan
            if math.isnan(precision):
                fs = math.nan
            else:
                fs = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
            per_wheel[wheel] = {
                "fs": fs,
                "precision": precision,
                "recall": recall,
                "n_scored": len(precisions),
            }
        means = {
            key: math.fsum(row[key] for row in per_wheel.values()) / len(per_wheel)
            for key in ("fs", "precision", "recall")
        }
        return {**means, "per_wheel": per_wheel}


# ---------------------------------------------------------------- synthetic data


def synthetic(folder: Path, n: int, seed: int) -> tuple[list[Any], list[Any]]:
    """n (gold, prediction) pairs from wheel words, word forms, synonyms and OOV words."""
    rng = random.Random(seed)
    wheel_words: set[str] = set()
    for wheel in WHEELS:
        with (folder / f"{wheel}.csv").open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                wheel_words.update(cell.strip().lower() for cell in row.values() if cell and cell.strip())
    forms: set[str] = set()
    with (folder / "format.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            forms.update(baseline_split(row["format"]))
    synonyms: set[str] = set()
    with (folder / "synonym.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for key, cell in row.items():
                if key.startswith("synonym_run"):
                    synonyms.update(item.lower() for item in baseline_split(cell))
    oov = ["neutral", "calmness", "ok", "unknown", "meh", "blorfy", "serenity-ish", "none"]
    pools = [sorted(wheel_words), sorted(forms), sorted(synonyms), oov]
    weights = [0.45, 0.3, 0.15, 0.1]

    def words(k: int) -> list[str]:
        out = []
        for pool in rng.choices(pools, weights, k=k):
            word = rng.choice(pool)
            out.append(word.capitalize() if rng.random() < 0.2 else word)
        return out

    golds: list[Any] = []
    preds: list[Any] = []
    for _ in range(n):
        golds.append(words(rng.randint(1, 4)))
        pred = words(rng.choice([0, 1, 2, 2, 3, 3, 4, 5, 6]))
        style = rng.random()
        if style < 0.4:
            preds.append(", ".join(pred))
        elif style < 0.5:
            preds.append(str(pred))  # "['a', 'b']"
        else:
            preds.append(pred)
    return golds, preds


# ---------------------------------------------------------------- comparison


def same_scores(fast: dict[str, Any], slow: dict[str, Any]) -> bool:
    def equal(a: float, b: float) -> bool:
        return (math.isnan(a) and math.isnan(b)) or a == b

    if not all(equal(fast[key], slow[key]) for key in ("fs", "precision", "recall")):
        return False
    for wheel in WHEELS:
        f, s = fast["per_wheel"][wheel], slow["per_wheel"][wheel]
        if f["n_scored"] != s["n_scored"] or not all(
            equal(f[k], s[k]) for k in ("fs", "precision", "recall")
        ):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--wheels", type=Path, required=True, help="folder with format.csv, synonym.csv, wheel*.csv"
    )
    parser.add_argument("--n", type=int, default=100_000, help="number of synthetic samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline-budget",
        type=float,
        default=60.0,
        help="seconds the baseline may take before it is subsampled",
    )
    args = parser.parse_args(argv)

    golds, preds = synthetic(args.wheels, args.n, args.seed)
    n_words = sum(len(baseline_split(x)) for x in golds) + sum(len(baseline_split(x)) for x in preds)

    # Fast path: load (maps the whole vocabulary once), then score all samples; a second run reuses
    # the per-word cache.
    start = time.perf_counter()
    table = EmotionWheels.load(args.wheels)
    fast_load = time.perf_counter() - start
    start = time.perf_counter()
    fast = ov_scores(golds, preds, table)
    fast_cold = time.perf_counter() - start
    start = time.perf_counter()
    fast_again = ov_scores(golds, preds, table)
    fast_warm = time.perf_counter() - start
    assert same_scores(fast, fast_again)

    # Baseline: estimate its speed on a small slice, then run it on everything or on a subsample.
    start = time.perf_counter()
    baseline = BaselineScorer(args.wheels)
    slow_load = time.perf_counter() - start
    probe = min(args.n, 2_000)
    start = time.perf_counter()
    baseline.score(golds[:probe], preds[:probe])
    per_sample = (time.perf_counter() - start) / max(probe, 1)
    m = (
        args.n
        if per_sample * args.n <= args.baseline_budget
        else max(probe, int(args.baseline_budget / per_sample))
    )
    start = time.perf_counter()
    slow = baseline.score(golds[:m], preds[:m])
    slow_time = time.perf_counter() - start
    slow_full = slow_time * args.n / m

    # Identical scores on the samples the baseline saw.
    reference = fast if m == args.n else ov_scores(golds[:m], preds[:m], table)
    if not same_scores(reference, slow):
        print("MISMATCH between the fast scorer and the baseline", file=sys.stderr)
        print(f"fast:     {reference}", file=sys.stderr)
        print(f"baseline: {slow}", file=sys.stderr)
        return 1

    note = "" if m == args.n else f" (ran {m:,} samples in {slow_time:.2f} s, extrapolated)"
    print(f"Open-vocabulary metric, {args.n:,} synthetic samples ({n_words:,} words), 5 wheels")
    print(f"Fs {fast['fs']:.4f}  precision {fast['precision']:.4f}  recall {fast['recall']:.4f}")
    checked = "all samples" if m == args.n else f"the first {m:,} samples"
    print(f"Scores identical (fast vs baseline, bit for bit) on {checked}")
    for wheel in WHEELS:
        row = fast["per_wheel"][wheel]
        print(
            f"  {wheel}: Fs {row['fs']:.4f}  precision {row['precision']:.4f}  "
            f"recall {row['recall']:.4f}  scored {row['n_scored']:,}"
        )
    print()
    print(f"| implementation | load s | score s ({args.n:,} samples) | speed-up vs baseline |")
    print("|---|---|---|---|")
    print(f"| baseline (per word, per wheel, per sample){note} | {slow_load:.3f} | {slow_full:.2f} | 1.0x |")
    cold_ratio = slow_full / fast_cold
    print(f"| openvocab.ov_scores, first call | {fast_load:.3f} | {fast_cold:.2f} | {cold_ratio:.0f}x |")
    print(f"| openvocab.ov_scores, word cache warm | - | {fast_warm:.2f} | {slow_full / fast_warm:.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
