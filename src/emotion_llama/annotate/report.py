"""A human-readable report of a built dataset: ``report.md`` and ``report.html`` plus PNG charts.

The HTML is self-contained (inline CSS, no scripts, no network) and refers to images by relative
path, so the dataset folder can be zipped or served as it is. All record text goes through
:func:`html.escape`: transcripts and LLM output are untrusted and may contain markup.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from emotion_llama.annotate.export import Record, atomic_write_text
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.files import atomic_write_with
from emotion_llama.perception.action_units import ACTIVE_THRESHOLD, AU_MAX, AU_NAMES

#: The kinds of ``missing`` entries (``"face: no face in 40 frames"``) that the summary counts.
MISSING_KINDS: tuple[str, ...] = ("face", "audio", "speech")
NO_LABEL = "(none)"
NO_REASON = "(no reason given)"


class ReportError(EmotionLlamaError):
    """The report cannot be written from these records."""


@dataclass
class DatasetStats:
    clips: int = 0
    kept: int = 0
    filtered_by_reason: Counter[str] = field(default_factory=Counter)
    missing: Counter[str] = field(default_factory=Counter)
    labels_all: Counter[str] = field(default_factory=Counter)
    labels_kept: Counter[str] = field(default_factory=Counter)
    au_peak: Counter[str] = field(default_factory=Counter)
    au_clip: Counter[str] = field(default_factory=Counter)
    #: reasoning_source per record with a reasoning: llm, llm-retry, grounded (unchecked: older records)
    reasoning: Counter[str] = field(default_factory=Counter)
    #: records whose first LLM answer passed the faithfulness check
    first_faithful: int = 0
    conflicts: int = 0

    @property
    def filtered(self) -> int:
        return self.clips - self.kept

    @property
    def answered(self) -> int:
        return sum(self.reasoning.values())


def missing_kinds(rec: Record) -> set[str]:
    """The kinds (``face``, ``audio``, ``speech``, ...) named before the colon of ``missing`` entries."""
    return {str(m).split(":", 1)[0].strip().lower() for m in rec.get("missing") or [] if str(m).strip()}


def dataset_stats(records: Iterable[Record]) -> DatasetStats:
    st = DatasetStats()
    for rec in records:
        st.clips += 1
        label = rec.get("label") or NO_LABEL
        st.labels_all[label] += 1
        if rec.get("keep"):
            st.kept += 1
            st.labels_kept[label] += 1
        else:
            st.filtered_by_reason[rec.get("filter_reason") or NO_REASON] += 1
        st.missing.update(missing_kinds(rec))
        # A set per clip: an AU listed twice in one record still counts that clip once.
        st.au_peak.update(set(rec.get("peak_AU_list") or []))
        st.au_clip.update(set(rec.get("AU_list") or []))
        if rec.get("smp_reason_caption"):
            st.reasoning[str(rec.get("reasoning_source") or "unchecked")] += 1
            st.first_faithful += bool((rec.get("faithfulness") or {}).get("first_answer_ok"))
        st.conflicts += bool(rec.get("conflict"))
    return st


# -- charts ----------------------------------------------------------------------------------------
def _new_figure(width: float, height: float) -> Any:
    # A Figure on an explicit Agg canvas instead of pyplot: no global figure registry to leak into (so
    # nothing needs plt.close), no GUI backend, and safe from worker threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _integer_y(ax: Any) -> None:
    # Counts of clips: fractional ticks (0.25 clips) would only confuse on small sets.
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig: Any, path: Path) -> Path:
    # Saved to a temporary name first so a crash never leaves a truncated PNG under the real name.
    try:
        fig.tight_layout()
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        fig.clear()
    return path


@dataclass(frozen=True)
class _BarChart:
    """How one two-bar chart looks: its title, the two series' names, its spacing and what it says
    when there is nothing to draw."""

    title: str
    names: tuple[str, str]
    width_per_key: float
    rotation: int
    empty: str


_LABEL_CHART = _BarChart("Label distribution", ("all clips", "kept"), 0.8, 30, "no clips")
_AU_CHART = _BarChart("Action unit frequency", ("active at peak", "in AU_list"), 0.5, 45, "no action units")


def _paired_bars(
    chart: _BarChart, keys: list[str], first: Mapping[str, int], second: Mapping[str, int], path: Path
) -> Path:
    """Two bars per key (clips counted two ways), one chart."""
    fig = _new_figure(max(4.0, chart.width_per_key * len(keys) + 2.0), 3.5)
    ax = fig.add_subplot(1, 1, 1)
    xs = range(len(keys))
    ax.bar([x - 0.2 for x in xs], [first[k] for k in keys], width=0.4, label=chart.names[0])
    ax.bar([x + 0.2 for x in xs], [second[k] for k in keys], width=0.4, label=chart.names[1])
    ax.set_xticks(list(xs), keys, rotation=chart.rotation, ha="right")
    ax.set_ylabel("clips")
    _integer_y(ax)
    ax.set_title(chart.title)
    if keys:
        ax.legend()
    else:
        ax.text(0.5, 0.5, chart.empty, ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_label_distribution(stats: DatasetStats, path: Path) -> Path:
    labels = sorted(stats.labels_all, key=lambda k: (-stats.labels_all[k], k))
    return _paired_bars(_LABEL_CHART, labels, stats.labels_all, stats.labels_kept, path)


def _au_sort_key(code: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", code)
    return (int(digits) if digits else 10**6, code)


def plot_au_frequency(stats: DatasetStats, path: Path) -> Path:
    aus = sorted(set(stats.au_peak) | set(stats.au_clip), key=_au_sort_key)
    return _paired_bars(_AU_CHART, aus, stats.au_peak, stats.au_clip, path)


def plot_sample_aus(intensities: Mapping[str, float], path: Path, title: str = "") -> Path:
    """Horizontal bars of one clip's peak AU intensities (0-5) with the activity threshold marked."""
    aus = sorted(intensities, key=_au_sort_key)
    fig = _new_figure(4.0, max(1.6, 0.22 * len(aus) + 0.9))
    ax = fig.add_subplot(1, 1, 1)
    values = [float(intensities[a]) for a in aus]
    colors = ["tab:red" if v >= ACTIVE_THRESHOLD else "tab:gray" for v in values]
    ax.barh(range(len(aus)), values, color=colors)
    ax.set_yticks(range(len(aus)), [f"{a} {AU_NAMES.get(a, '')}".strip() for a in aus], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, AU_MAX)
    ax.axvline(ACTIVE_THRESHOLD, color="black", linestyle="--", linewidth=0.8)
    ax.tick_params(axis="x", labelsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    return _save(fig, path)


# -- helpers ---------------------------------------------------------------------------------------
def _card_stem(name: str) -> str:
    # Names are validated to be file-name safe, but the report also accepts unvalidated records: map
    # anything else to a safe stem, with a hash so that two different names cannot collide.
    if re.fullmatch(r"[A-Za-z0-9._-]+", name) and not name.startswith("."):
        return name
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', name).lstrip('.')[:60]}_{digest}"


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def _src(rel: str) -> str:
    """A relative path as an HTML attribute value: URL-quoted (spaces, ``#``) and then escaped."""
    return html.escape(quote(rel, safe="/._-~"), quote=True)


def _md(text: object) -> str:
    """Text safe in a Markdown table cell: Markdown renderers pass raw HTML through, so it is escaped,
    and pipes and newlines would break the table row."""
    s = "" if text is None else str(text)
    return html.escape(" ".join(s.split()), quote=False).replace("|", "\\|")


def _h(text: object) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _join(items: Iterable[object]) -> str:
    return ", ".join(str(x) for x in items)


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "n/a"


@dataclass
class _Card:
    rec: Record
    name: str
    peak_frame: str | None  # relative to the report folder
    au_timeline: str | None
    au_chart: str | None


def _peak_text(rec: Record) -> str:
    index, time_s = rec.get("peak_index"), rec.get("peak_time_s")
    parts = [] if index is None else [f"frame {index}"]
    if time_s is not None:
        parts.append(f"at {float(time_s):.2f} s")
    return " ".join(parts)


def _sample_fields(rec: Record) -> list[tuple[str, str]]:
    label = rec.get("label")
    source = rec.get("label_source")
    tone = rec.get("audio_tone")
    tone_words = rec.get("audio_prior_list") or []
    fields = [
        ("Label", f"{label or NO_LABEL}" + (f" (from {source})" if source else "")),
        ("Votes", _votes_text(rec)),
        ("Conflict", rec.get("conflict_reason") or "" if rec.get("conflict") else ""),
        ("LLM label", rec.get("llm_label") or ""),
        ("Transcript", rec.get("subtitle") or ""),
        ("Tone", (tone or "") + (f" [{_join(tone_words)}]" if tone_words else "")),
        ("Visual expression", rec.get("visual_expression") or _join(rec.get("visual_prior_list") or [])),
        ("Visual description", rec.get("visual_objective") or ""),
        ("Peak", _peak_text(rec)),
        ("Reasoning", rec.get("smp_reason_caption") or ""),
        ("Reasoning source", _reasoning_text(rec)),
        ("Filter reason", "" if rec.get("keep") else rec.get("filter_reason") or NO_REASON),
        ("Missing", "; ".join(str(m) for m in rec.get("missing") or [])),
    ]
    return [(k, str(v)) for k, v in fields if str(v).strip()]


def _votes_text(rec: Record) -> str:
    parts = []
    for modality, vote in (rec.get("modalities") or {}).items():
        if not isinstance(vote, Mapping):
            continue
        if vote.get("label"):
            parts.append(f"{modality} {vote['label']} ({float(vote.get('confidence') or 0):.2f})")
        elif vote.get("supports"):
            parts.append(f"{modality} {vote.get('level', '')} arousal: {_join(vote['supports'])}")
    return "; ".join(parts)


def _reasoning_text(rec: Record) -> str:
    source = rec.get("reasoning_source")
    if not source:
        return ""
    faith = rec.get("faithfulness") or {}
    problems = faith.get("first_answer_problems") or []
    text = {
        "llm": "the LLM (faithful)",
        "llm-retry": "the LLM, second try",
        "grounded": "written from the clues",
    }
    out = text.get(str(source), str(source))
    return out + (f"; first answer: {_join(problems)}" if problems else "")


# -- rendering -------------------------------------------------------------------------------------
def _summary_rows(st: DatasetStats) -> list[tuple[str, str]]:
    rows = [("clips", str(st.clips)), ("kept", str(st.kept)), ("filtered", str(st.filtered))]
    if st.answered:
        rows += [
            ("reasoning: first LLM answer faithful", _pct(st.first_faithful, st.answered)),
            ("reasoning: faithful on the second try", _pct(st.reasoning["llm-retry"], st.answered)),
            ("reasoning: written from the clues", _pct(st.reasoning["grounded"], st.answered)),
        ]
    rows.append(("modalities in conflict", str(st.conflicts)))
    rows += [
        (f"filtered: {r}", str(n)) for r, n in sorted(st.filtered_by_reason.items(), key=lambda x: -x[1])
    ]
    rows += [(f"missing {k}", str(st.missing[k])) for k in MISSING_KINDS]
    return rows


def _label_rows(st: DatasetStats) -> list[tuple[str, str, str, str]]:
    labels = sorted(st.labels_all, key=lambda k: (-st.labels_all[k], k))
    return [
        (k, str(st.labels_all[k]), str(st.labels_kept[k]), _pct(st.labels_kept[k], st.kept)) for k in labels
    ]


def _au_rows(st: DatasetStats) -> list[tuple[str, str, str, str]]:
    aus = sorted(set(st.au_peak) | set(st.au_clip), key=_au_sort_key)
    return [(a, AU_NAMES.get(a, ""), str(st.au_peak[a]), str(st.au_clip[a])) for a in aus]


def render_markdown(title: str, st: DatasetStats, cards: Sequence[_Card], charts: Mapping[str, str]) -> str:
    out = [f"# {_md(title)}", "", "## Summary", "", "| | clips |", "|---|---:|"]
    out += [f"| {_md(k)} | {v} |" for k, v in _summary_rows(st)]
    out += [
        "",
        "## Label distribution",
        "",
        "| label | clips | kept | share of kept |",
        "|---|---:|---:|---:|",
    ]
    out += [f"| {_md(k)} | {a} | {b} | {c} |" for k, a, b, c in _label_rows(st)]
    out += ["", f"![label distribution]({charts['labels']})", ""]
    out += ["## Action units", "", "| AU | name | active at peak | in AU_list |", "|---|---|---:|---:|"]
    out += [f"| {_md(a)} | {_md(n)} | {p} | {c} |" for a, n, p, c in _au_rows(st)]
    out += ["", f"![AU frequency]({charts['aus']})", "", "## Samples", ""]
    for card in cards:
        status = "kept" if card.rec.get("keep") else "filtered"
        out += [f"### {_md(card.name)} ({status})", ""]
        images = [
            (card.peak_frame, "peak frame"),
            (card.au_chart, "AU intensities"),
            (card.au_timeline, "AUs"),
        ]
        shown = [f"![{alt}]({quote(p, safe='/._-~')})" for p, alt in images if p]
        if shown:
            out += [" ".join(shown), ""]
        out += [f"- **{k}:** {_md(v)}" for k, v in _sample_fields(card.rec)]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:0.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px}
td.n{text-align:right}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:1em}
.card{border:1px solid #bbb;border-radius:6px;padding:0.8em}
.card.filtered{background:#fbf1f1}
.card img{max-width:100%;display:block;margin:0.3em 0}
.card dt{font-weight:600}
.card dd{margin:0 0 0.4em 0;white-space:pre-wrap}
.badge{font-size:0.8em;padding:1px 6px;border-radius:4px;background:#dfe;margin-left:0.5em}
.filtered .badge{background:#fdd}
""".strip()


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int) -> str:
    th = "".join(f"<th>{_h(h)}</th>" for h in head)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="n">{_h(c)}</td>' if i >= numeric_from else f"<td>{_h(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(title: str, st: DatasetStats, cards: Sequence[_Card], charts: Mapping[str, str]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_h(title)}</h1>",
        "<h2>Summary</h2>",
        _table(["", "clips"], _summary_rows(st), 1),
        "<h2>Label distribution</h2>",
        _table(["label", "clips", "kept", "share of kept"], _label_rows(st), 1),
        f'<img src="{_src(charts["labels"])}" alt="label distribution">',
        "<h2>Action units</h2>",
        _table(["AU", "name", "active at peak", "in AU_list"], _au_rows(st), 2),
        f'<img src="{_src(charts["aus"])}" alt="AU frequency">',
        "<h2>Samples</h2>",
        '<div class="cards">',
    ]
    for card in cards:
        kept = bool(card.rec.get("keep"))
        cls = "card" if kept else "card filtered"
        parts.append(f'<div class="{cls}" id="clip-{_h(_card_stem(card.name))}">')
        parts.append(f'<h3>{_h(card.name)}<span class="badge">{"kept" if kept else "filtered"}</span></h3>')
        for path, alt in ((card.peak_frame, "peak frame"), (card.au_chart, "AU intensities at the peak")):
            if path:
                parts.append(f'<img src="{_src(path)}" alt="{_h(alt)}" loading="lazy">')
        if card.au_timeline:
            parts.append(f'<a href="{_src(card.au_timeline)}">AU timeline</a>')
        parts.append("<dl>")
        parts += [f"<dt>{_h(k)}</dt><dd>{_h(v)}</dd>" for k, v in _sample_fields(card.rec)]
        parts.append("</dl></div>")
    parts += ["</div>", "</body></html>"]
    return "\n".join(parts) + "\n"


# -- entry point -----------------------------------------------------------------------------------
def _linked(rec: Record, key: str, dataset_dir: Path, out: Path) -> str | None:
    """The record's dataset-relative image path, re-expressed relative to the report folder; None when
    the record has none or the file is absent (a broken image would look like a rendering bug)."""
    rel = rec.get(key)
    if not isinstance(rel, str) or not rel:
        return None
    target = dataset_dir / rel
    return _rel(target, out) if target.is_file() else None


def write_report(
    records: Iterable[Record],
    out_dir: str | Path,
    title: str = "Dataset report",
    *,
    dataset_dir: str | Path | None = None,
    max_cards: int | None = None,
) -> list[Path]:
    """Write ``report.md``, ``report.html``, ``label_distribution.png``, ``au_frequency.png`` and one
    ``cards/{name}_aus.png`` per sample with AU intensities; returns every path written.

    ``dataset_dir`` is the folder the records' ``peak_frame`` / ``au_timeline_png`` are relative to
    (default: ``out_dir``). ``max_cards`` caps the sample cards (all by default) for very large sets.
    """
    recs = list(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(dataset_dir) if dataset_dir is not None else out
    st = dataset_stats(recs)
    written = [
        plot_label_distribution(st, out / "label_distribution.png"),
        plot_au_frequency(st, out / "au_frequency.png"),
    ]
    charts = {"labels": "label_distribution.png", "aus": "au_frequency.png"}

    cards: list[_Card] = []
    seen: set[str] = set()
    for rec in recs if max_cards is None else recs[: max(0, max_cards)]:
        name = rec.get("name")
        if not isinstance(name, str) or not name:
            raise ReportError(f"a record has no clip name (source {rec.get('source')!r})")
        stem = _card_stem(name)
        if stem in seen:
            raise ReportError(f"clip name {name!r} appears in more than one record")
        seen.add(stem)
        chart = None
        intensities = rec.get("au_intensities") or {}
        if intensities:
            written.append(plot_sample_aus(intensities, out / "cards" / f"{stem}_aus.png", title=name))
            chart = f"cards/{stem}_aus.png"
        cards.append(
            _Card(
                rec=rec,
                name=name,
                peak_frame=_linked(rec, "peak_frame", base, out),
                au_timeline=_linked(rec, "au_timeline_png", base, out),
                au_chart=chart,
            )
        )
    written.append(atomic_write_text(out / "report.md", render_markdown(title, st, cards, charts)))
    written.append(atomic_write_text(out / "report.html", render_html(title, st, cards, charts)))
    return written
