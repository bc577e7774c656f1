"""Rule 1 of the faithfulness check: the facial movements a text names, with the FACS phrases that
support each (the table in the :mod:`emotion_llama.annotate.faithfulness` docstring)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from emotion_llama.annotate.faithfulness.text import POSSESSIVE as _P
from emotion_llama.annotate.faithfulness.text import Hit, Tokens, non_overlapping
from emotion_llama.perception.action_units import AU_NAMES

_BROWS = r"(?:eye)?brows?"


@dataclass(frozen=True)
class _FaceCue:
    key: str
    pattern: re.Pattern[str]
    supports: frozenset[str]


def _face(key: str, supports: Iterable[str], *patterns: str) -> _FaceCue:
    return _FaceCue(key, re.compile("|".join(f"(?:{p})" for p in patterns)), frozenset(supports))


SMILE = "smile"
_FACE_CUES: tuple[_FaceCue, ...] = (
    *(
        _face(phrase, [phrase], r"\b" + r"[\s-]+".join(phrase.split()) + r"s?\b")
        for phrase in AU_NAMES.values()
        if phrase not in ("blink", "lips part", "jaw drop")
    ),
    _face(
        SMILE,
        ["lip corner puller"],
        r"\b(?:smil(?:e|es|ed|ing|ey)|grin(?:s|ned|ning)?|beam(?:s|ed|ing))\b",
        rf"\b(?:corners?\s+of\s+{_P}(?:mouth|lips)|mouth\s+corners?|lip\s+corners?)\s+(?:(?:are|is)\s+)?"
        r"(?:turn(?:s|ed)?|pull(?:s|ed)?|curl(?:s|ed)?|curv(?:e|es|ed)|lift(?:s|ed)?|rais(?:e|es|ed))\s+up(?:ward)?s?\b",
        r"\bup-?turned\s+(?:mouth|lips|lip\s+corners|corners\s+of\s+(?:the\s+)?(?:mouth|lips))\b",
    ),
    _face("smirk", ["lip corner puller", "dimpler"], r"\bsmirk(?:s|ed|ing)?\b"),
    _face(
        "frown",
        ["brow lowerer", "lip corner depressor"],
        r"\b(?:frown(?:s|ed|ing)?|scowl(?:s|ed|ing)?)\b",
        rf"\b(?:furrow(?:s|ed|ing)?|knit(?:s|ted|ting)?|lower(?:s|ed|ing)?|draw(?:s|n)?|crease[sd]?)\s+{_P}{_BROWS}\b",
        rf"\b{_BROWS}\s+(?:(?:are|is|were|was|slightly|deeply)\s+)*(?:furrow(?:s|ed)?|knit(?:s|ted)?|lowered|drawn"
        r"(?:\s+together)?|pulled\s+together|creased|draw\s+together)\b",
        r"\b(?:furrowed|creased)\s+forehead\b",
    ),
    _face(
        "mouth down",
        ["lip corner depressor"],
        r"\bdown-?turned\s+(?:mouth|lips|lip\s+corners|corners\s+of\s+(?:the\s+)?(?:mouth|lips))\b",
        rf"\b(?:corners?\s+of\s+{_P}(?:mouth|lips)|mouth\s+corners?|lip\s+corners?)\s+(?:(?:are|is)\s+)?"
        r"(?:turn(?:s|ed)?|pull(?:s|ed)?|droop(?:s|ed|ing)?|point(?:s|ed)?|curv(?:e|es|ed))\s+down(?:ward)?s?\b",
        r"\bmouth\s+(?:(?:is|was)\s+)?turned\s+down\b",
    ),
    _face("pout", ["lip corner depressor", "chin raiser"], r"\bpout(?:s|ed|ing|y)?\b"),
    _face(
        "inner brows up",
        ["inner brow raiser"],
        rf"\binner\s+(?:corners?\s+of\s+{_P})?{_BROWS}\s+(?:(?:are|is)\s+)?(?:raised|lifted|rise|rises|up)\b",
        rf"\b(?:rais(?:e|es|ed|ing)|lift(?:s|ed|ing)?)\s+{_P}inner\s+(?:corners?\s+of\s+{_P})?{_BROWS}\b",
    ),
    _face(
        "outer brows up",
        ["outer brow raiser"],
        rf"\bouter\s+(?:corners?\s+of\s+{_P})?{_BROWS}\s+(?:(?:are|is)\s+)?(?:raised|lifted|rise|rises|up)\b",
        rf"\b(?:rais(?:e|es|ed|ing)|lift(?:s|ed|ing)?)\s+{_P}outer\s+(?:corners?\s+of\s+{_P})?{_BROWS}\b",
    ),
    _face(
        "brows up",
        ["inner brow raiser", "outer brow raiser"],
        rf"\b(?:rais(?:e|es|ed|ing)|lift(?:s|ed|ing)?|arch(?:es|ed|ing)?)\s+{_P}{_BROWS}\b",
        rf"\b{_BROWS}\s+(?:(?:are|is|were|was|go|goes|went|shoot|shoots|slightly)\s+)*(?:raised|lifted|arched|up|"
        r"rise|rises|rising|rose|lift|lifts)\b",
    ),
    _face(
        "wide eyes",
        ["upper lid raiser"],
        r"\bwide-eyed\b",
        r"\bwide(?:ned)?\s+eyes\b",
        r"\beyes\s+(?:(?:are|were|go|went|grow|grew)\s+)?(?:wide|widen(?:s|ed|ing)?)\b",
        rf"\bwiden(?:s|ed|ing)?\s+{_P}eyes\b",
    ),
    _face(
        "squint",
        ["lid tightener", "cheek raiser"],
        r"\bsquint(?:s|ed|ing|y)?\b",
        rf"\bnarrow(?:s|ed|ing)?\s+{_P}eyes\b",
        r"\beyes\s+(?:(?:are|is)\s+)?(?:narrow(?:s|ed|ing)?|crinkl(?:e|es|ed|ing))\b",
        rf"\bcrinkl(?:e|es|ed|ing)\s+{_P}eyes\b",
        r"\bcrow's\s+feet\b",
    ),
    _face(
        "cheeks up",
        ["cheek raiser"],
        r"\bcheeks?\s+(?:(?:are|is|slightly)\s+)?(?:rais(?:e|es|ed|ing)|ris(?:e|es|ing)|rose|lift(?:s|ed|ing)?|"
        r"bunch(?:es|ed)?(?:\s+up)?|puff(?:s|ed)?\s+up)\b",
        rf"\b(?:rais(?:es|ed|ing)|lift(?:s|ed|ing)?)\s+{_P}cheeks?\b",
    ),
    _face(
        "open mouth",
        ["jaw drop", "lips part"],
        r"\bopen(?:ed)?\s+mouth\b",
        r"\bmouth\s+(?:(?:is|was|hangs|hanging|falls|fell|drops|dropped|slightly|wide|half|partly|partially)\s+)*"
        r"(?:open(?:s|ed|ing)?|agape|ajar)\b",
        rf"\bopen(?:s|ed|ing)?\s+{_P}mouth\b",
        r"\bjaw\s+(?:(?:is|was|slightly)\s+)*(?:drop(?:s|ped|ping)?|open(?:s|ed)?|falls|fell|slack(?:ens)?)\b",
        r"\b(?:dropped|slack|open)\s+jaw\b",
        r"\bgap(?:e|es|ed|ing)\b",
        r"\bagape\b",
        r"\blips?\s+(?:(?:are|is|slightly|apart)\s+)*(?:part(?:s|ed|ing)?|apart|open(?:s|ed)?|separat(?:e|ed))\b",
        rf"\bpart(?:s|ed|ing)?\s+{_P}lips\b",
        r"\bparted\s+lips\b",
    ),
    _face(
        "nose wrinkle",
        ["nose wrinkler"],
        rf"\b(?:wrinkl(?:e|es|ed|ing)|scrunch(?:es|ed|ing)?)\s+(?:up\s+)?{_P}nose\b",
        r"\bnose\s+(?:(?:is|was)\s+)?(?:wrinkl(?:e|es|ed|ing)|scrunch(?:es|ed)?)\b",
    ),
    _face("sneer", ["nose wrinkler", "upper lip raiser"], r"\bsneer(?:s|ed|ing)?\b"),
    _face(
        "upper lip up",
        ["upper lip raiser"],
        rf"\b(?:curl(?:s|ed|ing)?|rais(?:es|ed|ing)|lift(?:s|ed|ing)?)\s+{_P}(?:upper\s+)?lip\b",
        r"\bupper\s+lip\s+(?:(?:is|was)\s+)?(?:raised|curl(?:s|ed)?|lifted|rises)\b",
        r"\blip\s+curl(?:s|ed|ing)?\b",
    ),
    _face(
        "pressed lips",
        ["lip tightener"],
        rf"\bpurs(?:e|es|ed|ing)\s+{_P}lips\b",
        r"\b(?:pursed|pressed|tight(?:ened)?|thin(?:ned)?|compressed)\s+lips\b",
        r"\blips\s+(?:(?:are|is|were|was)\s+)?(?:pursed|pressed(?:\s+together)?|tight(?:ened)?|compressed|thinned|"
        r"drawn\s+tight)\b",
        rf"\b(?:press(?:es|ed|ing)?|tighten(?:s|ed|ing)?)\s+{_P}lips\b",
        r"\btight-lipped\b",
    ),
    _face(
        "lip bite",
        ["lip suck"],
        rf"\b(?:bit(?:es|ing|e)?|suck(?:s|ed|ing)?|roll(?:s|ed|ing)?)\s+(?:in\s+)?{_P}(?:lower\s+|upper\s+)?lips?\b",
        r"\blips?\s+(?:(?:are|is)\s+)?(?:rolled|sucked)\s+in\b",
    ),
    _face(
        "stretched lips",
        ["lip stretcher"],
        rf"\bstretch(?:es|ed|ing)?\s+{_P}lips\b",
        r"\blips?\s+(?:(?:are|is)\s+)?stretched\b",
        r"\bstretched\s+lips\b",
    ),
    _face(
        "grimace",
        ["lip stretcher", "upper lip raiser", "brow lowerer", "nose wrinkler", "lid tightener"],
        r"\bgrimac(?:e|es|ed|ing)\b",
    ),
    _face(
        "eyes closed",
        ["eyes closed", "blink"],
        r"\beyes\s+(?:(?:are|were|stay|stays|remain|remains|tightly|briefly|half|is)\s+)*(?:closed|shut|"
        r"clos(?:e|es|ing))\b",
        r"\b(?:closed|shut)\s+eyes\b",
        rf"\b(?:clos(?:e|es|ed|ing)|shut(?:s|ting)?)\s+{_P}eyes\b",
    ),
    _face("blink", ["frequent blinking", "blink"], r"\bblink(?:s|ed|ing)?\b"),
    _face("dimple", ["dimpler"], r"\bdimpl(?:e|es|ed|ing)\b"),
    _face(
        "chin up",
        ["chin raiser"],
        r"\bchin\s+(?:(?:is|was)\s+)?(?:rais(?:e|es|ed|ing)|pucker(?:s|ed)?|wrinkl(?:es|ed|ing)|push(?:es|ed)\s+up|"
        r"jut(?:s|ted|ting)?)\b",
        rf"\b(?:rais(?:es|ed|ing)|jut(?:s|ted|ting)?|lift(?:s|ed)?)\s+{_P}chin\b",
        r"\b(?:raised|puckered|wrinkled|jutting)\s+chin\b",
    ),
)
_AU_CODE = re.compile(r"\bau\s?(\d{1,2})\b")
GENERIC_FACE = re.compile(
    r"\bfacial(?:\s+(?:expressions?|movements?|cues?|actions?|features?|muscles?))?\b|\b(?:her|his|their|the|its|the\s+person's)\s+(?:face|faces|expression|expressions|eyes|"
    r"eyebrows|brows|brow|mouth|lips|cheeks|forehead|nose|chin|jaw|gaze)\b"
)


def find_face_hits(text: str, toks: Tokens) -> list[Hit]:
    hits = [
        Hit(m.start(), m.end(), cue.key, cue.supports)
        for cue in _FACE_CUES
        for m in cue.pattern.finditer(text)
    ]
    for m in _AU_CODE.finditer(text):
        phrase = AU_NAMES.get(f"AU{int(m.group(1)):02d}")
        if phrase is not None:
            hits.append(Hit(m.start(), m.end(), phrase, frozenset([phrase])))
    return [h for h in non_overlapping(hits) if not toks.negated(toks.at(h.start))]
