"""Reports: ``metrics.json``, ``report.md`` and, for classification, ``confusion.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emotion_llama.files import atomic_write_text


def write_reports(metrics: dict[str, Any], out: str | Path, *, model: str | None = None) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if model:
        metrics = {"model": model, **metrics}
    written = [
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    ]
    written.append(atomic_write_text(out / "report.md", render_markdown(metrics)))
    if "last_word" in metrics:
        written.append(plot_confusion(metrics["last_word"], out / "confusion.png", metrics["benchmark"]))
    return written


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def render_markdown(m: dict[str, Any]) -> str:
    lines = [f"# {m['benchmark']} evaluation", ""]
    if m.get("model"):
        lines.append(f"- model: `{m['model']}`")
    fmt = f" (`{m['source_format']}` format)" if m.get("source_format") else ""
    lines.append(f"- predictions: {m['n']}{fmt}")
    if m.get("judge"):
        lines.append(f"- judge: `{m['judge']}`")
    for key, what in (("n_empty_reference", "reference"), ("n_empty_gold", "gold")):
        if m.get(key):
            lines.append(f"- skipped for an empty {what} (as AffectGPT skips them): {m[key]}")
    lines += [f"- **warning**: {w}" for w in m.get("warnings", [])]
    if m.get("rejected"):
        lines.append(f"- **rows left out** ({len(m['rejected'])}; the others are scored):")
        lines += [f"  - {p}" for p in m["rejected"]]
    lines.append("")
    if "sentiment_rule" in m:
        lines += _sentiment_lines(m)
    elif "last_word" not in m and "hit_rate" in m:
        lines += _hit_rate_lines(m)
    elif "last_word" in m:
        lines += [
            "| answer parser | accuracy (WAR) | weighted F1 | macro F1 | UAR | unparsed |",
            "|---|---|---|---|---|---|",
        ]
        for key, title in (("last_word", "last word (authors' rule)"), ("robust", "robust")):
            r = m[key]
            lines.append(
                f"| {title} | {_pct(r['accuracy'])} | {_pct(r['weighted_f1'])} | {_pct(r['macro_f1'])} "
                f"| {_pct(r['uar'])} | {m[f'unparsed_{key}']} |"
            )
        lines += ["", "Answers outside the label set count as neutral (both parsers).", ""]
        if "combined" in m:
            c = m["combined"]
            lines += [
                f"MER2023 combined score (weighted F1 - 0.25 x valence MSE; valence MSE "
                f"{c['valence_mse']:.4f}): last word {c['last_word']:.4f}, robust {c['robust']:.4f}",
                "",
            ]
        if isinstance(m.get("hit_rate"), dict):
            lines += [f"Hit rate (MER-UniBench, emotion wheels): {_pct(m['hit_rate']['hit_rate'])}", ""]
        if "folds" in m:
            lines += ["| fold | n | UAR | WAR |", "|---|---|---|---|"]
            for fold, f in m["folds"].items():
                lines.append(f"| {fold} | {f['n']} | {_pct(f['uar'])} | {_pct(f['war'])} |")
            mean = m["mean_over_folds"]
            lines += [f"| mean | | {_pct(mean['uar'])} | {_pct(mean['war'])} |", ""]
        r = m["last_word"]
        lines += ["Per class (last-word rule):", "", "| label | precision | recall | F1 | support |"]
        lines.append("|---|---|---|---|---|")
        for label in r["labels"]:
            c = r["per_class"][label]
            lines.append(
                f"| {label} | {_pct(c['precision'])} | {_pct(c['recall'])} | {_pct(c['f1'])} "
                f"| {int(c['support'])} |"
            )
        lines += ["", "Confusion matrix (rows: gold, columns: predicted): `confusion.png`", ""]
        header = "| gold \\ pred | " + " | ".join(r["labels"]) + " |"
        lines += [header, "|---" * (len(r["labels"]) + 1) + "|"]
        for label, row in zip(r["labels"], r["confusion"], strict=True):
            lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    elif m["benchmark"] == "emer":
        lines += [
            "| clue overlap (1-10) | label overlap (1-10) | unparsed replies (clue/label) |",
            "|---|---|---|",
            f"| {_num(m['clue_overlap'])} | {_num(m['label_overlap'])} "
            f"| {m['clue_unparsed']}/{m['label_unparsed']} |",
        ]
    else:
        lines += ["| Fs | precision | recall | samples with gold words |", "|---|---|---|---|"]
        lines.append(
            f"| {_pct(m['fs'])} | {_pct(m['precision'])} | {_pct(m['recall'])} | {m.get('n_scored')} |"
        )
        if m.get("per_wheel"):
            lines += ["", "| wheel | Fs | precision | recall |", "|---|---|---|---|"]
            for wheel, w in m["per_wheel"].items():
                lines.append(f"| {wheel} | {_pct(w['fs'])} | {_pct(w['precision'])} | {_pct(w['recall'])} |")
    return "\n".join(lines).rstrip() + "\n"


def _sentiment_lines(m: dict[str, Any]) -> list[str]:
    lines = [
        "| answer parser | weighted F1 | accuracy | scored | neutral golds removed | undecided answers |",
        "|---|---|---|---|---|---|",
    ]
    for key, title in (("exact", "exact (the whole answer)"), ("robust", "robust")):
        r = m[key]
        lines.append(
            f"| {title} | {_pct(r['weighted_f1'])} | {_pct(r['accuracy'])} | {r['n']} | {r['neutral_gold']} "
            f"| {r['undecided']} |"
        )
    lines += [
        "",
        f"Sentiment rule `{m['sentiment_rule']}`: {m['sentiment_rule_text']}. Undecided answers name "
        "neither positive nor negative.",
    ]
    return lines


def _hit_rate_lines(m: dict[str, Any]) -> list[str]:
    lines = ["| hit rate | samples with a gold sector |", "|---|---|"]
    lines.append(f"| {_pct(m['hit_rate'])} | {m.get('n_scored')} |")
    lines += ["", "| wheel | hit rate | scored |", "|---|---|---|"]
    for wheel, w in m["per_wheel"].items():
        lines.append(f"| {wheel} | {_pct(w['hit_rate'])} | {w['n_scored']} |")
    return lines


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def plot_confusion(report: dict[str, Any], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = report["labels"]
    cm = np.asarray(report["confusion"], dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.7 * len(labels)), dpi=120)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"{title}: weighted F1 {100 * report['weighted_f1']:.1f}")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j, i, int(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black"
            )
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the gold row")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
