"""Rules 2 and 3 of the faithfulness check: the tone vocabulary (what each word claims about the
voice, and which clue words support or contradict it) and the scan that finds tone claims in a text."""

from __future__ import annotations

import re
from dataclasses import dataclass

from emotion_llama.annotate.faithfulness.text import POSSESSIVE as _P
from emotion_llama.annotate.faithfulness.text import Tokens


@dataclass(frozen=True)
class Tone:
    supports: frozenset[str]
    opposites: frozenset[str]
    dims: frozenset[str]


def _tone(supports: str, opposites: str, dims: str) -> Tone:
    return Tone(frozenset(supports.split()), frozenset(opposites.split()), frozenset(dims.split()))


_PITCH, _LOUD, _RATE, _INTON, _QUAL = "pitch", "loudness", "rate", "intonation", "quality"
DIM_OF = {
    "high-pitched": _PITCH,
    "low-pitched": _PITCH,
    "loud": _LOUD,
    "soft": _LOUD,
    "fast": _RATE,
    "slow": _RATE,
    "lively": _INTON,
    "monotone": _INTON,
    "rough": _QUAL,
    "breathy": _QUAL,
    "hoarse": _QUAL,
}
DIM_TEXT = {
    _PITCH: "pitch",
    _LOUD: "loudness",
    _RATE: "speaking rate",
    _INTON: "intonation",
    _QUAL: "voice quality",
}

_HIGH = _tone("high-pitched", "low-pitched", _PITCH)
_LOW = _tone("low-pitched", "high-pitched", _PITCH)
_LOW_VOICE = _tone("low-pitched soft", "high-pitched loud", f"{_PITCH} {_LOUD}")
_LOUDER = _tone("loud", "soft", _LOUD)
_SOFTER = _tone("soft", "loud", _LOUD)
_FAST = _tone("fast", "slow", _RATE)
_SLOW = _tone("slow", "fast", _RATE)
_LIVELY = _tone("lively", "monotone", _INTON)
_MONO = _tone("monotone", "lively", _INTON)
_ROUGH = _tone("rough hoarse", "", _QUAL)
_BREATHY = _tone("breathy hoarse", "", _QUAL)
_HOARSE = _tone("hoarse", "", _QUAL)


def _split(words: str) -> list[str]:
    return words.split()


def _words(tone: Tone, words: str) -> dict[str, Tone]:
    return dict.fromkeys(_split(words), tone)


#: Words that describe the voice wherever they stand.
_INHERENT: dict[str, Tone] = {
    **_words(_HIGH, "high-pitched higher-pitched shrill shrilly squeaky"),
    **_words(_LOW, "low-pitched lower-pitched deep-voiced"),
    **_words(
        _SOFTER,
        "whisper whispers whispered whispering murmur murmurs murmured murmuring mumble mumbles mumbled "
        "mumbling soft-spoken",
    ),
    **_words(_FAST, "fast-talking"),
    **_words(_MONO, "monotone monotonous monotonously"),
    **_words(_LIVELY, "sing-song singsong"),
    **_words(_HOARSE, "hoarse hoarsely"),
    **_words(_BREATHY, "breathy breathily husky"),
    **_words(_ROUGH, "raspy rasping gravelly"),
}
#: Words that describe the voice next to a voice word (rule 2 of the
#: :mod:`emotion_llama.annotate.faithfulness` docstring).
_CONTEXT: dict[str, Tone] = {
    **_words(_LOUDER, "loud loudly louder booming"),
    **_words(_SOFTER, "soft softly softer quiet quietly quieter hushed faint faintly"),
    **_words(
        _FAST,
        "fast faster quick quickly quicker rapid rapidly hurried hurriedly rushed brisk briskly fast-paced "
        "rapid-fire",
    ),
    **_words(_SLOW, "slow slowly slower unhurried leisurely drawn-out drawling sluggish sluggishly"),
    **_words(_LIVELY, "lively animated animatedly expressive expressively varied melodic"),
    **_words(_MONO, "flat flatly droning"),
    **_words(_ROUGH, "rough scratchy croaky croaking"),
}
_VOICE = frozenset({"voice", "voices"})
#: Words that describe the voice only with the nouns given (forward, backward).
_RESTRICTED: dict[str, tuple[dict[str, Tone], dict[str, Tone]]] = {
    **dict.fromkeys(
        ("high", "higher"),
        (
            {
                **dict.fromkeys(("voice", "voices", "tone", "tones", "pitch", "register"), _HIGH),
                "volume": _LOUDER,
            },
            {"voice": _HIGH, "pitch": _HIGH, "volume": _LOUDER},
        ),
    ),
    **dict.fromkeys(
        ("low", "lower"),
        (
            {
                **dict.fromkeys(("voice", "voices", "tone", "tones"), _LOW_VOICE),
                "pitch": _LOW,
                "register": _LOW,
                "volume": _SOFTER,
            },
            {"voice": _LOW_VOICE, "pitch": _LOW, "volume": _SOFTER},
        ),
    ),
    **dict.fromkeys(
        ("deep", "deeper"),
        (dict.fromkeys(("voice", "voices", "tone", "tones", "pitch", "register"), _LOW), {"voice": _LOW}),
    ),
    **dict.fromkeys(
        (
            "trembling",
            "tremulous",
            "shaky",
            "shaking",
            "quavering",
            "wavering",
            "quivering",
            "unsteady",
            "cracking",
        ),
        (
            dict.fromkeys(("voice", "voices", "tone", "speech", "delivery"), _ROUGH),
            dict.fromkeys(("voice", "voices", "sounds", "sounded"), _ROUGH),
        ),
    ),
    **dict.fromkeys(
        _split(
            "trembles trembled shakes shook quivers quivered wavers wavered cracks cracked breaks broke "
            "quavers quavered"
        ),
        ({}, dict.fromkeys(("voice", "voices"), _ROUGH)),
    ),
}
_TONE_KEYS = frozenset(_INHERENT) | frozenset(_CONTEXT) | frozenset(_RESTRICTED)
_TONE_PHRASES: tuple[tuple[re.Pattern[str], Tone], ...] = (
    (re.compile(rf"\brais(?:e|es|ed|ing)\s+{_P}voices?\b"), _LOUDER),
    (re.compile(rf"\blower(?:s|ed|ing)?\s+{_P}voices?\b"), _SOFTER),
)

_SPEECH_VERBS = frozenset(
    _split(
        """speak speaks speaking spoke spoken talk talks talking talked say says saying said tell tells
    telling told answer answers answered answering reply replies replied replying respond responds responded
    responding ask asks asked asking utter utters uttered uttering explain explains explained explaining
    exclaim exclaims exclaimed declare declares declared announce announces announced admit admits admitted
    insist insists insisted chat chats chatting chatter chatters chattering recount recounts recounted
    describe describes described"""
    )
)
_VOICE_NOUNS = frozenset(
    _split(
        """voice voices tone tones pitch intonation speech delivery cadence register timbre volume speaking
    talking diction utterance utterances narration"""
    )
)
_BACK_ONLY = frozenset({"sounds", "sounded", "sounding"})
#: Voice words only after a speech word ("speaks at a slow pace", not "walks at a slow pace").
_COND_NOUNS = frozenset({"pace", "tempo", "manner", "way", "fashion", "rhythm"})
_INTENSIFIERS = frozenset(
    _split(
        """very quite rather fairly somewhat slightly a an bit little more much increasingly unusually
    extremely really so too relatively noticeably particularly remarkably notably pretty overly almost also
    still even oddly strikingly"""
    )
)
_LINKING = frozenset(
    _split(
        """is was are were be been being seems seemed seem remains remained remain becomes became become gets
    got get grows grew turns turned stays stayed feels felt appears appeared"""
    )
)
_CONJ = frozenset({"and", "or", ","})


@dataclass(frozen=True)
class ToneHit:
    start: int
    end: int
    word: str  # as reported
    token: str  # the tone word itself
    tone: Tone


class _ToneScan:
    def __init__(self, toks: Tokens) -> None:
        self.t = toks

    def _same(self, i: int, j: int) -> bool:
        return 0 <= j < len(self.t) and self.t.clause[j] == self.t.clause[i]

    def _tone_after(self, j: int, step: int) -> bool:
        """Whether the first non-intensifier token from ``j`` in direction ``step`` is a tone word."""
        k = j
        while self._same(j, k) and self.t.words[k] in _INTENSIFIERS:
            k += step
        return self._same(j, k) and self.t.words[k] in _TONE_KEYS

    def neighbour(self, i: int, step: int) -> int:
        """The index of the first token from ``i`` in direction ``step`` past intensifiers, tone words,
        linking verbs (backward only) and the conjunctions of a chain of tone words; -1 at the
        clause end."""
        j = i + step
        while self._same(i, j):
            w = self.t.words[j]
            skip = w in _INTENSIFIERS or w in _TONE_KEYS or (step < 0 and w in _LINKING)
            if not skip and w in _CONJ:
                skip = self._tone_after(j + step, step)
            if not skip:
                return j
            j += step
        return -1

    def _speech_near(self, i: int, noun: int) -> bool:
        """For a conditional voice noun (pace, manner, ...) at ``noun``: a speech word comes in the six
        tokens before ``i``, or the noun goes on with "of (her) speech"."""
        before = any(
            self._same(i, j) and self.t.words[j] in _SPEECH_VERBS | _VOICE_NOUNS for j in range(i - 6, i)
        )
        of = self.t.word(noun + 1) == "of"
        k = noun + 2 + (self.t.word(noun + 2) in _POSSESSIVES)
        return before or (of and self.t.word(k) in _SPEECH_VERBS | _VOICE_NOUNS)

    def tone_of(self, i: int) -> tuple[Tone, str] | None:
        """The tone claim of the tone word at ``i`` and the words to report, or ``None``."""
        w = self.t.words[i]
        if w in _INHERENT:
            return _INHERENT[w], w
        f, b = self.neighbour(i, +1), self.neighbour(i, -1)
        fwd, back = self.t.word(f) if f >= 0 else "", self.t.word(b) if b >= 0 else ""
        if w in _RESTRICTED:
            nouns_fwd, nouns_back = _RESTRICTED[w]
            if fwd in nouns_fwd:
                return nouns_fwd[fwd], f"{w} {fwd}" if f == i + 1 else w
            if back in nouns_back:
                return nouns_back[back], " ".join(self.t.words[b : i + 1]) if i - b <= 2 else w
            return None
        tone = _CONTEXT.get(w)
        if tone is None:
            return None
        voiced = (
            fwd in _VOICE_NOUNS
            or fwd in _SPEECH_VERBS
            or (fwd in _COND_NOUNS and self._speech_near(i, f))
            or back in _VOICE_NOUNS
            or back in _SPEECH_VERBS
            or back in _BACK_ONLY
            or (back in _COND_NOUNS and self._speech_near(i, b))
        )
        return (tone, w) if voiced else None


_POSSESSIVES = frozenset({"her", "his", "their", "its", "the"})


def find_tone_hits(text: str, toks: Tokens) -> list[ToneHit]:
    hits: list[ToneHit] = []
    for pattern, tone in _TONE_PHRASES:
        for m in pattern.finditer(text):
            if not toks.negated(toks.at(m.start())):
                hits.append(ToneHit(m.start(), m.end(), m.group(), m.group(), tone))
    scan = _ToneScan(toks)
    for i, w in enumerate(toks.words):
        if w not in _TONE_KEYS or any(h.start <= toks.starts[i] < h.end for h in hits):
            continue
        found = scan.tone_of(i)
        if found is not None and not toks.negated(i):
            hits.append(ToneHit(toks.starts[i], toks.ends[i], found[1], w, found[0]))
    return sorted(hits, key=lambda h: h.start)
