"""Rule 4 of the faithfulness check: behaviours a text claims (laughter, crying, shouting, sighing,
trembling) and the sound tags of a subtitle that support them."""

from __future__ import annotations

import re
from collections.abc import Sequence

from emotion_llama.annotate.faithfulness.text import Hit, Tokens, prepare

LAUGHTER, CRYING, SHOUTING, SIGHING, TREMBLING = "laughter", "crying", "shouting", "sighing", "trembling"
_BEHAVIOURS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        LAUGHTER,
        re.compile(
            r"\b(?:laugh(?:s|ed|ing|ter)?|giggl(?:e|es|ed|ing)|chuckl(?:e|es|ed|ing)|cackl(?:e|es|ed|ing)|"
            r"guffaw(?:s|ed|ing)?)\b"
        ),
    ),
    (
        CRYING,
        re.compile(
            r"\b(?:cry|cries|cried|crying|tears|tearful(?:ly)?|teary(?:-eyed)?|sob(?:s|bed|bing)?|weep(?:s|ing)?|"
            r"wept|whimper(?:s|ed|ing)?|tearing\s+up|welling\s+up|watery\s+eyes)\b|\beyes\s+(?:(?:are|is)\s+)?"
            r"(?:watery|welling|moist|wet|tearing)\b"
        ),
    ),
    (
        SHOUTING,
        re.compile(r"\b(?:shout|yell|scream|shriek|holler|bellow)(?:s|ed|ing)?\b"),
    ),
    (SIGHING, re.compile(r"\bsigh(?:s|ed|ing)?\b")),
    (
        TREMBLING,
        re.compile(
            r"\b(?:trembl(?:e|es|ed|ing)|shiver(?:s|ed|ing)?|quiver(?:s|ed|ing)?|shak(?:y|ing)\s+(?:hands?|lips?|"
            r"chin|body))\b"
        ),
    ),
)
_LAUGH_SOUND = re.compile(r"\ba?ha(?:[\s-]?ha)+h?\b|\bhe(?:he)+h?\b|\blol\b")
_SOUND_TAG = re.compile(r"[\[(*]\s*([^\])*]{1,40}?)\s*[\])*]")
_TAG_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (LAUGHTER, re.compile(r"laugh|chuckl|giggl|cackl")),
    (CRYING, re.compile(r"\bcr(?:y|ies|ying)\b|\bsob|weep|sniff|tears|whimper")),
    (SIGHING, re.compile(r"\bsigh")),
    (SHOUTING, re.compile(r"shout|yell|scream")),
)


def find_behaviour_hits(text: str, toks: Tokens, taken: Sequence[tuple[int, int]]) -> list[Hit]:
    hits: list[Hit] = []
    for family, pattern in _BEHAVIOURS:
        for m in pattern.finditer(text):
            if any(s < m.end() and m.start() < e for s, e in taken):
                continue
            i = toks.at(m.start())
            if family == CRYING and toks.word(i - 1) == "far":
                continue
            if not toks.negated(i):
                hits.append(Hit(m.start(), m.end(), family, frozenset()))
    return sorted(hits, key=lambda h: h.start)


def subtitle_families(subtitle: str) -> set[str]:
    text = prepare(subtitle)
    found = {LAUGHTER} if _LAUGH_SOUND.search(text) else set()
    for m in _SOUND_TAG.finditer(text):
        found |= {family for family, pattern in _TAG_FAMILIES if pattern.search(m.group(1))}
    return found
