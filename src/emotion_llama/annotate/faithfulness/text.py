"""Text preparation for the faithfulness check: normalisation, quotes, tokens, clauses, negation.

The rules that use these (and the exact negation and clause cues) are in the
:mod:`emotion_llama.annotate.faithfulness` docstring.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass

# One character to one, so that positions stay valid.
_CHAR_MAP = str.maketrans(
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u02bc": "'",
        "\u2010": "-",
        "\u2011": "-",
        "\u2013": ",",
        "\u2014": ",",
    }
)
# Two-word forms joined as the one-token forms (a space becomes a hyphen: same length).
_JOIN = re.compile(
    r"\b(high|low|higher|lower|fast|wide|deep|soft|sing|tight|rapid|teary)\s(pitched|paced|eyed|voiced|"
    r"spoken|song|lipped|fire|talking)\b"
)


def prepare(text: str) -> str:
    text = text.translate(_CHAR_MAP)
    lowered = text.lower()
    if len(lowered) != len(text):  # a rare character lowers to two ("İ"): keep it as it is
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    text = lowered
    return _JOIN.sub(lambda m: f"{m.group(1)}-{m.group(2)}", text)


def norm_quote(text: str) -> str:
    """Lower-cased words of a quote or subtitle, punctuation dropped, single spaces."""
    text = prepare(text).replace("-", " ").replace("_", " ")
    return " ".join(re.sub(r"[^\w\s]", "", text).split())


def _has_cjk(text: str) -> bool:
    return any(ord(c) >= 0x2E80 for c in text)


def contains(haystack: str, needle: str) -> bool:
    """Whether normalised ``needle`` is a run of whole words of ``haystack`` (any run of
    characters for CJK text, which has no spaces between words)."""
    if not needle:
        return True
    if _has_cjk(needle):
        return needle.replace(" ", "") in haystack.replace(" ", "")
    return f" {needle} " in f" {haystack} "


_DQ = re.compile(r'"([^"]*)"')
_SQ = re.compile(r"(?<![\w'])'((?:[^'\n]|(?<=\w)'(?=\w))+?)'(?!\w)")
ELLIPSIS = re.compile(r"\.{2,}|…")


@dataclass(frozen=True)
class Quote:
    start: int
    end: int
    content: str
    words: int


def find_quotes(text: str) -> list[Quote]:
    out = [
        Quote(m.start(), m.end(), m.group(1), len(norm_quote(m.group(1)).split())) for m in _DQ.finditer(text)
    ]
    masked = mask(text, [(q.start, q.end) for q in out])
    for m in _SQ.finditer(masked):
        words = len(norm_quote(m.group(1)).split())
        if words >= 3:
            out.append(Quote(m.start(), m.end(), m.group(1), words))
    return sorted(out, key=lambda q: q.start)


def mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


# -- tokens, clauses, negation ----------------------------------------------------------------------
_TOKEN = re.compile(r"\w+(?:['\-]\w+)*|[.;:!?…,]")
_STOPS = frozenset(".;:!?…")
_BREAK_WORDS = frozenset({"but", "while", "whereas", "although", "though", "yet", "however"})
_COMMA_BREAK = frozenset(
    {"and", "but", "so", "then", "yet", "she", "he", "they", "it", "her", "his", "their", "the", "this",
     "which", "who", "while", "whereas", "i", "we", "you", "its"}
)  # fmt: skip
_NEG = frozenset(
    {"no", "not", "never", "without", "nor", "neither", "none", "nothing", "absence", "absent", "lack",
     "lacks", "lacking", "cannot"}
)  # fmt: skip
_NOT_NEG_AFTER = frozenset({"only", "doubt", "wonder", "question", "just", "mistaking"})
_NEG_WINDOW = 6


class Tokens:
    """Word and punctuation tokens of a prepared text, with their clause numbers."""

    def __init__(self, text: str) -> None:
        matches = list(_TOKEN.finditer(text))
        self.words = [m.group() for m in matches]
        self.starts = [m.start() for m in matches]
        self.ends = [m.end() for m in matches]
        self.clause: list[int] = []
        clause = 0
        for i, w in enumerate(self.words):
            nxt = self.words[i + 1] if i + 1 < len(self.words) else ""
            if w in _STOPS or w in _BREAK_WORDS or (w == "," and nxt in _COMMA_BREAK):
                clause += 1
            self.clause.append(clause)

    def __len__(self) -> int:
        return len(self.words)

    def at(self, pos: int) -> int:
        """The index of the token at or before character ``pos``."""
        return max(0, bisect.bisect_right(self.starts, pos) - 1)

    def word(self, i: int) -> str:
        return self.words[i] if 0 <= i < len(self.words) else ""

    def _cue(self, j: int) -> bool:
        w, nxt = self.words[j], self.word(j + 1)
        if nxt in _NOT_NEG_AFTER:
            return False
        return (
            w in _NEG
            or w.endswith("n't")
            or (w == "rather" and nxt == "than")
            or (w in ("instead", "free") and nxt == "of")
        )

    def negated(self, i: int) -> bool:
        """Whether a negation cue precedes token ``i`` within the window, in its clause."""
        seen = 0
        j = i - 1
        while j >= 0 and seen < _NEG_WINDOW and self.clause[j] == self.clause[i]:
            if self.words[j] != ",":
                seen += 1
                if self._cue(j):
                    return True
            j -= 1
        return False

    def clause_negated(self, i: int) -> bool:
        """Whether any negation cue (or "missing", "unavailable", ...) is in token ``i``'s clause."""
        c = self.clause[i]
        return any(
            self.clause[j] == c and (self._cue(j) or self.words[j] in _ABSENT_WORDS) for j in range(len(self))
        )


_ABSENT_WORDS = frozenset(
    {"missing", "unavailable", "invisible", "hidden", "obscured", "unknown", "unseen", "undetected"}
)


#: An optional possessive or article before a body part or the voice ("her", "the person's").
POSSESSIVE = r"(?:(?:her|his|their|its|the|one's|the\s+person's|the\s+speaker's)\s+)?"


# -- hits: matched spans of the text ----------------------------------------------------------------
@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    key: str
    supports: frozenset[str]

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


def non_overlapping(hits: list[Hit]) -> list[Hit]:
    """Longest first at each position, then no hit overlapping a kept one."""
    kept: list[Hit] = []
    for h in sorted(hits, key=lambda h: (h.start, -(h.end - h.start))):
        if not any(k.overlaps(h.start, h.end) for k in kept):
            kept.append(h)
    return kept


#: A sentence or list line: up to a sentence end or a line break.
_SENTENCE = re.compile(r"[^\n.!?]+")
_LIST_MARK = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s*")
#: How often one sentence may come before the text counts as degenerate (rule 8), and the fewest
#: words a sentence needs to count ("Yes." twice is no loop).
MAX_REPEATS = 2
MIN_REPEAT_WORDS = 3


def repeated_sentences(text: str) -> list[tuple[int, int, int]]:
    """``(start, end, count)`` of the first occurrence of each sentence or list line of ``text`` that
    comes more than :data:`MAX_REPEATS` times (compared lower-cased, list numbers and punctuation
    left out), in text order: the loops weak LLMs fall into ("17. Lips stretched: Sad" ...)."""
    seen: dict[str, list[tuple[int, int]]] = {}
    for m in _SENTENCE.finditer(text):
        piece = _LIST_MARK.sub("", m.group())
        words = re.findall(r"[\w']+", piece.lower())
        if len(words) >= MIN_REPEAT_WORDS:
            lead = len(m.group()) - len(m.group().lstrip())
            seen.setdefault(" ".join(words), []).append((m.start() + lead, m.end()))
    out = [(spans[0][0], spans[0][1], len(spans)) for spans in seen.values() if len(spans) > MAX_REPEATS]
    return sorted(out)
