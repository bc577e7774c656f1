"""The faithfulness check itself, :func:`check_reasoning`, and the explanation that always
passes it, :func:`grounded_reasoning`; the rules and sentences are in the
:mod:`emotion_llama.annotate.faithfulness` docstring."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from emotion_llama.annotate.faithfulness.behaviour import SHOUTING, find_behaviour_hits, subtitle_families
from emotion_llama.annotate.faithfulness.evidence import CONTRADICTS, Evidence, Faithfulness
from emotion_llama.annotate.faithfulness.face import GENERIC_FACE, SMILE, find_face_hits
from emotion_llama.annotate.faithfulness.text import (
    ELLIPSIS,
    Quote,
    Tokens,
    contains,
    find_quotes,
    mask,
    norm_quote,
    prepare,
    repeated_sentences,
)
from emotion_llama.annotate.faithfulness.tone import DIM_OF, DIM_TEXT, find_tone_hits
from emotion_llama.perception.action_units import AU_NAMES


# -- the check --------------------------------------------------------------------------------------
def _base(word: str) -> str:
    word = " ".join(word.lower().split())
    return word.removeprefix("very ").strip()


def _either(phrases: Iterable[str]) -> str:
    items = sorted(phrases)
    if len(items) == 1:
        return f"no {items[0]}"
    if len(items) == 2:
        return f"neither {items[0]} nor {items[1]}"
    return f"none of {', '.join(items)}"


@functools.cache
def _emotion_vocabulary() -> frozenset[str]:
    from emotion_llama.prompts import LABEL_WORDS

    return frozenset(w for words in LABEL_WORDS.values() for w in words) | frozenset(
        ("disgust", "disgusted", "contempt", "depressed", "concerned", "emotion", "emotions")
    )


def _emotion_words(norm: str) -> bool:
    """A one- or two-word quote of emotion words ("the clue is "anger"") names an emotion, it does not
    quote speech (rule 5)."""
    words = norm.split()
    return 0 < len(words) <= 2 and all(w in _emotion_vocabulary() for w in words)


def _clue_texts(ev: Evidence) -> list[str]:
    """Normalised clue strings a quote may come from without being speech (rule 5)."""
    texts = [*ev.au_phrases, *ev.tone_words, " ".join(ev.au_phrases), " ".join(ev.tone_words)]
    texts.append("a voice of moderate pitch loudness and pace")
    return [n for t in texts if (n := norm_quote(t))]


@dataclass
class _Problems:
    items: list[tuple[int, str]]

    def add(self, pos: int, message: str) -> None:
        self.items.append((pos, message))

    def result(self) -> tuple[str, ...]:
        out: list[str] = []
        for _, msg in sorted(self.items, key=lambda x: x[0]):
            if msg not in out:
                out.append(msg)
        return tuple(out)


def check_reasoning(text: str, evidence: Evidence) -> Faithfulness:
    """Whether ``text`` claims only what ``evidence`` supports, by the rules of the
    :mod:`emotion_llama.annotate.faithfulness` docstring."""
    if not text or not text.strip():
        return Faithfulness(ok=False, problems=("empty reasoning",))
    ev = evidence
    problems = _Problems([])
    prepared = prepare(text)  # same length as ``text``: spans index both

    def shown(start: int, end: int) -> str:
        return " ".join(text[start:end].split())

    # rule 5 first: quoted speech is taken out of the text the other rules read
    quotes = find_quotes(prepared)
    subtitle = norm_quote(ev.subtitle) if quotes else ""
    objective = norm_quote(ev.visual_objective or "") if quotes else ""
    label = norm_quote(ev.label or "") if quotes else ""
    clue_texts = _clue_texts(ev) if quotes else []
    masked_spans: list[tuple[int, int]] = []
    unverified: list[Quote] = []
    for q in quotes:
        norm = norm_quote(q.content)
        if not norm:
            masked_spans.append((q.start, q.end))
            continue
        parts = [p for part in ELLIPSIS.split(q.content) if (p := norm_quote(part))]
        spoken = bool(subtitle) and all(contains(subtitle, p) for p in parts)
        if spoken or (objective and contains(objective, norm)) or norm == label or _emotion_words(norm):
            masked_spans.append((q.start, q.end))
        elif any(contains(c, norm) for c in clue_texts):
            continue  # clue words in quotes are still claims: left for rules 1-3
        elif q.words <= 2:
            unverified.append(q)  # maybe scare quotes: decided after the other rules
        else:
            masked_spans.append((q.start, q.end))
            unverified.append(q)
    body = mask(prepared, masked_spans)
    toks = Tokens(body)

    # rule 1: facial actions
    au = {_base(p) for p in ev.au_phrases}
    vo_text = prepare(ev.visual_objective or "")
    vo_toks = Tokens(vo_text)
    vo_face = {h.key for h in find_face_hits(vo_text, vo_toks)}
    face_hits = find_face_hits(body, toks)
    for h in face_hits:
        said = shown(h.start, h.end)
        if h.key in vo_face:
            continue
        if not ev.has_face:
            problems.add(h.start, f"mentions '{said}' but no face was analysed")
        elif h.supports & au:
            continue
        elif h.key == SMILE and "lip corner depressor" in au:
            problems.add(
                h.start,
                f"{CONTRADICTS}mentions '{said}' but the face clue has a lip corner depressor and no "
                "lip corner puller",
            )
        elif not au:
            problems.add(h.start, f"mentions '{said}' but no facial action was detected")
        else:
            problems.add(h.start, f"mentions '{said}' but the face clue has {_either(h.supports)}")
    if not ev.has_face and ev.visual_objective is None:
        for m in GENERIC_FACE.finditer(body):
            if any(h.overlaps(m.start(), m.end()) for h in face_hits):
                continue
            if not toks.clause_negated(toks.at(m.start())):
                problems.add(
                    m.start(), f"describes the face ('{shown(m.start(), m.end())}') but no face was analysed"
                )

    # rules 2 and 3: tone
    clue_words = [" ".join(w.lower().split()) for w in ev.tone_words]
    base = {_base(w) for w in clue_words}
    tone_hits = find_tone_hits(body, toks)
    for t in tone_hits:
        if not ev.has_voice:
            problems.add(t.start, f"says '{t.word}' but no voice was measured")
            continue
        if t.tone.supports & base or _base(t.token) in base:
            continue
        opposite = next((w for w in clue_words if _base(w) in t.tone.opposites), None)
        if opposite is not None:
            problems.add(t.start, f"{CONTRADICTS}says '{t.word}' but the tone clue is '{opposite}'")
            continue
        same_dim = [w for w in clue_words if DIM_OF.get(_base(w)) in t.tone.dims]
        if same_dim:
            problems.add(t.start, f"says '{t.word}' but the tone clue is '{same_dim[0]}'")
        else:
            dims = " or ".join(DIM_TEXT[d] for d in sorted(t.tone.dims))
            problems.add(t.start, f"says '{t.word}' but the tone clue does not describe {dims}")

    # rule 4: behaviours
    supported = subtitle_families(ev.subtitle)
    supported |= {h.key for h in find_behaviour_hits(vo_text, vo_toks, ())}
    if "loud" in base and ev.has_voice:
        supported.add(SHOUTING)
    for h in find_behaviour_hits(body, toks, [(t.start, t.end) for t in tone_hits]):
        said = shown(h.start, h.end)
        if h.key in supported:
            continue
        if h.key != SHOUTING:
            problems.add(h.start, f"mentions '{said}' but no clue shows {h.key}")
        elif not ev.has_voice:
            problems.add(h.start, f"mentions '{said}' but no voice was measured")
        elif (soft := next((w for w in clue_words if _base(w) == "soft"), None)) is not None:
            problems.add(h.start, f"{CONTRADICTS}mentions '{said}' but the tone clue is '{soft}'")
        else:
            problems.add(h.start, f"mentions '{said}' but the tone clue is not loud")

    # rule 5: the quotes that are not speech of the clip
    claimed = [(h.start, h.end) for h in face_hits] + [(t.start, t.end) for t in tone_hits]
    for q in unverified:
        if q.words <= 2 and any(q.start <= s < q.end for s, _ in claimed):
            continue
        quoted = shown(q.start + 1, q.end - 1)
        quoted = quoted if len(quoted) <= 60 else quoted[:57].rstrip() + "..."
        where = "the subtitle does not say it" if subtitle else "there is no subtitle"
        problems.add(q.start, f'quotes "{quoted}" but {where}')

    # rule 8: a degenerate text, the same sentence again and again
    for start, end, count in repeated_sentences(text):
        problems.add(start, f"repeats '{shown(start, end)}' {count} times")

    found = problems.result()
    return Faithfulness(ok=not found, problems=found)


# -- grounded reasoning -----------------------------------------------------------------------------
_AU_PHRASES = frozenset(AU_NAMES.values())
_INTONATION_WORDS = frozenset({"lively", "monotone"})


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _with_article(phrase: str) -> str:
    if phrase not in _AU_PHRASES or phrase == "lips part":
        return phrase
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def grounded_reasoning(evidence: Evidence, label: str | None = None) -> str:
    """A short explanation written from ``evidence`` alone (``label``, else the evidence's label,
    names the emotion). It uses the clue words verbatim, so it passes :func:`check_reasoning` with
    the same evidence; sentences whose evidence is absent are left out
    (see the :mod:`emotion_llama.annotate.faithfulness` docstring)."""
    ev = evidence
    sentences: list[str] = []
    phrases = [" ".join(p.split()) for p in ev.au_phrases if p.strip()]
    if ev.has_face and phrases:
        sentences.append(f"The face shows {_join([_with_article(p) for p in phrases])}.")
    words = [" ".join(w.split()) for w in ev.tone_words if w.strip()]
    if ev.has_voice and words:
        intonation = [w for w in words if _base(w) in _INTONATION_WORDS]
        adjectives = [w for w in words if _base(w) not in _INTONATION_WORDS]
        if adjectives and intonation:
            sentences.append(f"The voice is {_join(adjectives)}, with {_join(intonation)} intonation.")
        elif adjectives:
            sentences.append(f"The voice is {_join(adjectives)}.")
        else:
            sentences.append(f"The voice has {_join(intonation)} intonation.")
    subtitle = " ".join(ev.subtitle.replace('"', "'").split())
    if norm_quote(subtitle):
        end = "" if subtitle[-1] in ".!?…" else "."
        sentences.append(f'The person says: "{subtitle}"{end}')
    objective = " ".join((ev.visual_objective or "").replace('"', "'").split())
    if norm_quote(objective):
        sentences.append(f'The frame is described as: "{objective.rstrip(".")}".')
    name = (label if label is not None else ev.label) or ""
    name = " ".join(name.split())
    if name and sentences:
        sentences.append(f"These clues point to {name}.")
    elif name:
        sentences.append(f"No clue was measured; the record's label is {name}.")
    elif sentences:
        sentences.append("The clues are not enough to name an emotion.")
    else:
        sentences.append("No clue was measured, so no emotion can be named.")
    return " ".join(sentences)
