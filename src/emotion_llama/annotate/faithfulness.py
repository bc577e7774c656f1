"""Is an LLM's reasoning faithful to the clues of its clip? Pure functions, no torch, no I/O.

The dataset builder asks an instruct LLM to explain a person's emotion from the clues of a clip
(the facial action units, the tone words of :func:`~emotion_llama.perception.prosody.describe_tone`,
the transcript). Weak LLMs invent evidence: the tone clue says "low-pitched", the reasoning says
"high-pitched"; on a crying clip it says the person laughed; it names facial movements that were
not detected. :func:`check_reasoning` catches such texts by rules tied to the clue vocabulary,
and :func:`grounded_reasoning` writes an explanation from the clues alone that always passes it.

The check favours precision: it only flags what one of the rules below can tie to a word of the
text, so a faithful reasoning that restates the clues in ordinary words passes. The text is read
lower-cased; quoted speech is taken out before rules 1-4 (the person's own words are not claims
about them, see rule 5).

**Negation.** A mention is not a claim when a negation cue comes at most 6 words before it in the
same clause: ``no``, ``not``, ``never``, ``without``, ``nor``, ``neither``, ``none``, ``nothing``,
``absence``, ``absent``, ``lack``, ``lacks``, ``lacking``, ``cannot``, any ``...n't``, ``rather
than``, ``instead of``, ``free of`` ("she is not smiling", "without a hint of a smile", "the
absence of a smile", "she doesn't speak loudly"). ``not only``, ``no doubt``, ``no wonder``,
``not just`` are no negation ("not only smiling but laughing" claims both). Clauses end at
``. ; : ! ? …``, at ``but``, ``while``, ``whereas``, ``although``, ``though``, ``yet``,
``however``, and at a comma followed by a new subject or ``and``/``but``/``so``/``then``
(", she", ", her", ", and"), so "she is not sad, she smiles" still claims the smile, while
"no smile, frown or laughter" negates all three.

Rules (a text fails when any holds; each problem is one short sentence in
:attr:`Faithfulness.problems`):

1. **Invented facial movement.** The text names a facial action that the face clue
   (:attr:`Evidence.au_phrases`) does not support. Names are the 18 FACS phrases of
   :data:`~emotion_llama.perception.action_units.AU_NAMES` (each supported by itself), AU codes
   ("AU12"), and everyday words, each supported by any of the phrases given:

   ===============================================  =============================================
   everyday words                                   supported by
   ===============================================  =============================================
   smile, smiling, grin, beaming                    lip corner puller
   smirk                                            lip corner puller, dimpler
   frown, scowl, furrowed/knitted/lowered brows     brow lowerer, lip corner depressor
   corners of the mouth turned down, downturned     lip corner depressor
   pout                                             lip corner depressor, chin raiser
   raised/lifted/arched eyebrows, brows raised      inner brow raiser, outer brow raiser
   inner (outer) brows raised                       inner (outer) brow raiser
   wide eyes, wide-eyed, eyes widen                 upper lid raiser
   squint, narrowed eyes, eyes crinkle              lid tightener, cheek raiser
   cheeks rise/raised                               cheek raiser
   open mouth, mouth open, jaw drops, gaping,       jaw drop, lips part
   lips parted, parted lips, lips part
   wrinkled nose, nose wrinkles                     nose wrinkler
   sneer                                            nose wrinkler, upper lip raiser
   curled/raised upper lip                          upper lip raiser
   pursed/pressed/tight lips, tight-lipped          lip tightener
   bites her lip, lips rolled in                    lip suck
   stretched lips                                   lip stretcher
   grimace                                          lip stretcher, upper lip raiser, brow lowerer,
                                                    nose wrinkler, lid tightener
   eyes closed, closed eyes, shuts her eyes         eyes closed, blink
   blink, blinks, blinking                          frequent blinking, blink
   dimple                                           dimpler
   raised chin, chin raised/puckers                 chin raiser
   ===============================================  =============================================

   E.g. "she smiles" fails without "lip corner puller"; "her brows are furrowed" passes with
   "brow lowerer". The same words in the vision-language description
   (:attr:`Evidence.visual_objective`, when there is one) also support a claim ("a smiling
   woman" supports "she smiles"): it is a clue too. With :attr:`Evidence.has_face` false every
   facial claim the visual objective does not support fails ("mentions 'smiles' but no face was
   analysed"), and without a visual objective so does any mention of the face itself ("her
   face", "his eyes", "facial expression") unless its clause is negated or says it is missing
   ("her face is not visible", "the face clue is missing").
2. **Tone words not in the tone clue.** A word about the voice must agree with
   :attr:`Evidence.tone_words` in dimension and direction ("very loud" in the clue supports
   "loud"; "loud" supports "raised voice"):

   ===========  ===============================================================================
   dimension    words (claim -> clue word that supports it)
   ===========  ===============================================================================
   pitch        high-pitched, high pitch, higher pitch, shrill, squeaky -> high-pitched;
                low-pitched, low pitch, deep voice, deep-voiced -> low-pitched;
                "low voice", "low tone" -> low-pitched or soft
   loudness     loud, loudly, louder, booming, raises her voice, high volume -> loud;
                soft, softly, quiet, quietly, hushed, faint, whisper, murmur, mumble,
                soft-spoken, lowers her voice, low volume -> soft
   rate         fast, quick(ly), rapid(ly), hurried(ly), rushed, brisk(ly), fast-paced -> fast;
                slow, slowly, slower, unhurried, leisurely, drawn-out, drawling -> slow
   intonation   lively, animated(ly), expressive(ly), varied, melodic, sing-song -> lively;
                monotone, monotonous, flat, flatly, droning -> monotone
   quality      rough, raspy, gravelly, scratchy, croaky -> rough or hoarse; breathy, husky ->
                breathy or hoarse; hoarse -> hoarse; trembling/shaky/quavering voice, "her voice
                trembles/cracks" -> rough or hoarse
   ===========  ===============================================================================

   A clue word also supports itself literally. Only words that describe the voice count: whisper,
   murmur, mumble, monotone, hoarse, breathy, raspy, shrill, high-/low-pitched always do; the
   others only next to a voice word: followed by one ("a loud, fast voice", "in hushed tones",
   "rapid speech", "slowly says"; voice words: voice, tone, pitch, intonation, speech, delivery,
   cadence, register, timbre, volume, speaking, talking, the speech verbs, and pace, tempo,
   rhythm, manner, way, fashion only after a speech word or before "of (her) speech": "speaks at
   a slow pace", "the pace of her speech is slow"), or preceded by one with only
   intensifiers, linking verbs and other tone words between ("her voice is quite loud", "she
   speaks loudly and quickly", "she sounds hurried"). So "a slow smile", "a soft smile", "high
   hopes", "fast friends", "a quiet room", "she smiles and slowly nods" are not tone claims.
   "high", "low" and "deep" count only with voice, pitch, tone, register or volume ("her pitch is
   high", "a deep voice"); "trembling", "shaky" only with voice. Any tone claim fails when
   :attr:`Evidence.has_voice` is false ("says 'loud' but no voice was measured").
3. **Contradiction** (reported as "contradicts the clue: ...", and
   :attr:`Faithfulness.contradicts` is true): a tone claim whose opposite is in
   the clue (high vs low pitch, loud vs soft, fast vs slow, lively vs monotone), e.g. "says
   'high-pitched' but the tone clue is 'low-pitched'"; a smile when the face clue has "lip corner
   depressor" and no "lip corner puller"; shouting when the tone clue is soft.
4. **Invented behaviour.** Laughter (laugh, laughs, laughing, laughter, giggle, chuckle, cackle,
   guffaw) needs laughter in the subtitle ("haha", "hahaha", "hehe", "[laughter]", "(laughs)",
   "*chuckles*"); crying (cry, cries, crying, tears, tearful, teary, sob, weep, wept, whimper,
   watery eyes, tearing up) needs "[crying]", "(sobs)", "(sniffles)"-like tokens; shouting
   (shout, yell, scream, shriek, holler, bellow) needs "loud" or "very loud" in the tone clue
   (and a voice);
   sighing needs "[sighs]"-like tokens; trembling (tremble, shiver, quiver, shaky hands/lips)
   needs the visual objective. The visual objective mentioning the behaviour supports it too
   ("a man laughing"). Negated mentions ("she is not crying") do not count; "a far cry" is no
   crying.
5. **Misquoted speech.** A quoted span (straight or curly double quotes, or single quotes
   around 3+ words) must appear in the subtitle, compared lower-cased with punctuation and
   whitespace normalised; a sub-span is fine, and an ellipsis ("this is ... day") splits a quote
   into parts that must each appear. Quotes of the visual objective, of the label, or of clue
   words ("the tone clue says "low-pitched"") are no misquotes; a one- or two-word quote that is
   itself a face or tone claim is taken as scare quotes (its words are then judged by rules 1-3).
   Paraphrase ("she says that she is fine") is not judged.
6. **Visual scene.** Clothing, setting and other scene claims are not checked, with or without a
   visual objective: too open-ended to judge precisely.
7. **Empty text.** An empty or whitespace-only reasoning fails with "empty reasoning".

:func:`grounded_reasoning` writes the clue sentences that apply, in this order, and leaves out the
ones whose evidence is absent (no face, no detected action: no face sentence; no voice or no tone
word: no tone sentence; no subtitle, no visual objective: none of theirs)::

    The face shows a lip corner puller and a cheek raiser.
    The voice is high-pitched, loud and fast, with lively intonation.
    The person says: "This is the best day of my whole life."
    The frame is described as: "a woman in a red coat".
    These clues point to happy.

With no label the last sentence is "The clues are not enough to name an emotion."; with a label
but no clue sentence it is "No clue was measured; the record's label is {label}.".
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emotion_llama.perception.action_units import AU_NAMES

__all__ = [
    "Evidence",
    "Faithfulness",
    "check_reasoning",
    "evidence_from_record",
    "grounded_reasoning",
]


# -- public types -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """What the clip supports."""

    #: FACS phrases detected, e.g. ("lip corner puller", "cheek raiser"); may also hold the eye
    #: phrases "eyes closed" and "frequent blinking".
    au_phrases: tuple[str, ...] = ()
    #: :func:`~emotion_llama.perception.prosody.describe_tone` words, e.g. ("high-pitched", "very loud").
    tone_words: tuple[str, ...] = ()
    #: What the person says (transcript).
    subtitle: str = ""
    #: The record's label.
    label: str | None = None
    #: A vision-language model's description of the frame, when any.
    visual_objective: str | None = None
    has_face: bool = True
    #: Voiced speech was measured.
    has_voice: bool = True


@dataclass(frozen=True)
class Faithfulness:
    """The verdict of :func:`check_reasoning`: ``ok`` when there is no problem."""

    ok: bool
    #: One short human-readable sentence per problem, in text order, without repeats.
    problems: tuple[str, ...]

    @property
    def contradicts(self) -> bool:
        """Whether a problem is a contradiction of the clues (rule 3), the worst kind."""
        return any(p.startswith(_CONTRADICTS) for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": list(self.problems), "contradicts": self.contradicts}


def _strings(value: Any) -> tuple[str, ...]:
    """A list of strings (or one comma-separated string) as stripped, non-empty strings."""
    if value is None:
        return ()
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        return ()
    return tuple(s for v in items if v is not None and (s := str(v).strip()))


def evidence_from_record(record: Mapping[str, Any]) -> Evidence:
    """The :class:`Evidence` of a clue record (see :func:`~emotion_llama.annotate.pipeline.clue_record`).

    Keys read (absent or ``None`` ones are empty): ``visual_prior_list`` (the AU phrases),
    ``audio_prior_list`` (the tone words), ``subtitle``, ``label``, ``visual_objective`` and
    ``missing``: an entry whose kind (before the first ``:``) is ``face`` means no face, one of
    kind ``speech`` or ``audio`` means no voice."""
    kinds = {str(m).split(":", 1)[0].strip().lower() for m in _strings(record.get("missing"))}
    subtitle = record.get("subtitle")
    label = record.get("label")
    objective = record.get("visual_objective")
    return Evidence(
        au_phrases=_strings(record.get("visual_prior_list")),
        tone_words=_strings(record.get("audio_prior_list")),
        subtitle=str(subtitle).strip() if subtitle is not None else "",
        label=str(label).strip() or None if label is not None else None,
        visual_objective=str(objective).strip() or None if objective is not None else None,
        has_face="face" not in kinds,
        has_voice=not kinds & {"speech", "audio"},
    )


# -- text preparation -------------------------------------------------------------------------------
_CONTRADICTS = "contradicts the clue: "

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


def _prepare(text: str) -> str:
    text = text.translate(_CHAR_MAP)
    lowered = text.lower()
    if len(lowered) != len(text):  # a rare character lowers to two ("İ"): keep it as it is
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    text = lowered
    return _JOIN.sub(lambda m: f"{m.group(1)}-{m.group(2)}", text)


def _norm_quote(text: str) -> str:
    """Lower-cased words of a quote or subtitle, punctuation dropped, single spaces."""
    text = _prepare(text).replace("-", " ").replace("_", " ")
    return " ".join(re.sub(r"[^\w\s]", "", text).split())


def _has_cjk(text: str) -> bool:
    return any(ord(c) >= 0x2E80 for c in text)


def _contains(haystack: str, needle: str) -> bool:
    """Whether normalised ``needle`` is a run of whole words of ``haystack`` (any run of
    characters for CJK text, which has no spaces between words)."""
    if not needle:
        return True
    if _has_cjk(needle):
        return needle.replace(" ", "") in haystack.replace(" ", "")
    return f" {needle} " in f" {haystack} "


_DQ = re.compile(r'"([^"]*)"')
_SQ = re.compile(r"(?<![\w'])'((?:[^'\n]|(?<=\w)'(?=\w))+?)'(?!\w)")
_ELLIPSIS = re.compile(r"\.{2,}|…")


@dataclass(frozen=True)
class _Quote:
    start: int
    end: int
    content: str
    words: int


def _quotes(text: str) -> list[_Quote]:
    out = [
        _Quote(m.start(), m.end(), m.group(1), len(_norm_quote(m.group(1)).split()))
        for m in _DQ.finditer(text)
    ]
    masked = _mask(text, [(q.start, q.end) for q in out])
    for m in _SQ.finditer(masked):
        words = len(_norm_quote(m.group(1)).split())
        if words >= 3:
            out.append(_Quote(m.start(), m.end(), m.group(1), words))
    return sorted(out, key=lambda q: q.start)


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
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


class _Tokens:
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


# -- rule 1: facial actions -------------------------------------------------------------------------
_P = r"(?:(?:her|his|their|its|the|one's|the\s+person's|the\s+speaker's)\s+)?"
_BROWS = r"(?:eye)?brows?"


@dataclass(frozen=True)
class _FaceCue:
    key: str
    pattern: re.Pattern[str]
    supports: frozenset[str]


def _face(key: str, supports: Iterable[str], *patterns: str) -> _FaceCue:
    return _FaceCue(key, re.compile("|".join(f"(?:{p})" for p in patterns)), frozenset(supports))


_SMILE = "smile"
_FACE_CUES: tuple[_FaceCue, ...] = (
    *(
        _face(phrase, [phrase], r"\b" + r"[\s-]+".join(phrase.split()) + r"s?\b")
        for phrase in AU_NAMES.values()
        if phrase not in ("blink", "lips part", "jaw drop")
    ),
    _face(
        _SMILE,
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
_GENERIC_FACE = re.compile(
    r"\bfacial(?:\s+(?:expressions?|movements?|cues?|actions?|features?|muscles?))?\b|\b(?:her|his|their|the|its|the\s+person's)\s+(?:face|faces|expression|expressions|eyes|"
    r"eyebrows|brows|brow|mouth|lips|cheeks|forehead|nose|chin|jaw|gaze)\b"
)


@dataclass(frozen=True)
class _Hit:
    start: int
    end: int
    key: str
    supports: frozenset[str]

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


def _non_overlapping(hits: list[_Hit]) -> list[_Hit]:
    """Longest first at each position, then no hit overlapping a kept one."""
    kept: list[_Hit] = []
    for h in sorted(hits, key=lambda h: (h.start, -(h.end - h.start))):
        if not any(k.overlaps(h.start, h.end) for k in kept):
            kept.append(h)
    return kept


def _face_hits(text: str, toks: _Tokens) -> list[_Hit]:
    hits = [
        _Hit(m.start(), m.end(), cue.key, cue.supports)
        for cue in _FACE_CUES
        for m in cue.pattern.finditer(text)
    ]
    for m in _AU_CODE.finditer(text):
        phrase = AU_NAMES.get(f"AU{int(m.group(1)):02d}")
        if phrase is not None:
            hits.append(_Hit(m.start(), m.end(), phrase, frozenset([phrase])))
    return [h for h in _non_overlapping(hits) if not toks.negated(toks.at(h.start))]


# -- rule 4: behaviours -----------------------------------------------------------------------------
_LAUGHTER, _CRYING, _SHOUTING, _SIGHING, _TREMBLING = "laughter", "crying", "shouting", "sighing", "trembling"
_BEHAVIOURS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        _LAUGHTER,
        re.compile(
            r"\b(?:laugh(?:s|ed|ing|ter)?|giggl(?:e|es|ed|ing)|chuckl(?:e|es|ed|ing)|cackl(?:e|es|ed|ing)|"
            r"guffaw(?:s|ed|ing)?)\b"
        ),
    ),
    (
        _CRYING,
        re.compile(
            r"\b(?:cry|cries|cried|crying|tears|tearful(?:ly)?|teary(?:-eyed)?|sob(?:s|bed|bing)?|weep(?:s|ing)?|"
            r"wept|whimper(?:s|ed|ing)?|tearing\s+up|welling\s+up|watery\s+eyes)\b|\beyes\s+(?:(?:are|is)\s+)?"
            r"(?:watery|welling|moist|wet|tearing)\b"
        ),
    ),
    (
        _SHOUTING,
        re.compile(r"\b(?:shout|yell|scream|shriek|holler|bellow)(?:s|ed|ing)?\b"),
    ),
    (_SIGHING, re.compile(r"\bsigh(?:s|ed|ing)?\b")),
    (
        _TREMBLING,
        re.compile(
            r"\b(?:trembl(?:e|es|ed|ing)|shiver(?:s|ed|ing)?|quiver(?:s|ed|ing)?|shak(?:y|ing)\s+(?:hands?|lips?|"
            r"chin|body))\b"
        ),
    ),
)
_LAUGH_SOUND = re.compile(r"\ba?ha(?:[\s-]?ha)+h?\b|\bhe(?:he)+h?\b|\blol\b")
_SOUND_TAG = re.compile(r"[\[(*]\s*([^\])*]{1,40}?)\s*[\])*]")
_TAG_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (_LAUGHTER, re.compile(r"laugh|chuckl|giggl|cackl")),
    (_CRYING, re.compile(r"\bcr(?:y|ies|ying)\b|\bsob|weep|sniff|tears|whimper")),
    (_SIGHING, re.compile(r"\bsigh")),
    (_SHOUTING, re.compile(r"shout|yell|scream")),
)


def _behaviour_hits(text: str, toks: _Tokens, taken: Sequence[tuple[int, int]]) -> list[_Hit]:
    hits: list[_Hit] = []
    for family, pattern in _BEHAVIOURS:
        for m in pattern.finditer(text):
            if any(s < m.end() and m.start() < e for s, e in taken):
                continue
            i = toks.at(m.start())
            if family == _CRYING and toks.word(i - 1) == "far":
                continue
            if not toks.negated(i):
                hits.append(_Hit(m.start(), m.end(), family, frozenset()))
    return sorted(hits, key=lambda h: h.start)


def _subtitle_families(subtitle: str) -> set[str]:
    text = _prepare(subtitle)
    found = {_LAUGHTER} if _LAUGH_SOUND.search(text) else set()
    for m in _SOUND_TAG.finditer(text):
        found |= {family for family, pattern in _TAG_FAMILIES if pattern.search(m.group(1))}
    return found


# -- rules 2 and 3: tone ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Tone:
    supports: frozenset[str]
    opposites: frozenset[str]
    dims: frozenset[str]


def _tone(supports: str, opposites: str, dims: str) -> _Tone:
    return _Tone(frozenset(supports.split()), frozenset(opposites.split()), frozenset(dims.split()))


_PITCH, _LOUD, _RATE, _INTON, _QUAL = "pitch", "loudness", "rate", "intonation", "quality"
_DIM_OF = {
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
_DIM_TEXT = {
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


def _words(tone: _Tone, words: str) -> dict[str, _Tone]:
    return dict.fromkeys(_split(words), tone)


#: Words that describe the voice wherever they stand.
_INHERENT: dict[str, _Tone] = {
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
#: Words that describe the voice next to a voice word (see the module docstring).
_CONTEXT: dict[str, _Tone] = {
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
_RESTRICTED: dict[str, tuple[dict[str, _Tone], dict[str, _Tone]]] = {
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
_TONE_PHRASES: tuple[tuple[re.Pattern[str], _Tone], ...] = (
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
class _ToneHit:
    start: int
    end: int
    word: str  # as reported
    token: str  # the tone word itself
    tone: _Tone


class _ToneScan:
    def __init__(self, toks: _Tokens) -> None:
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

    def tone_of(self, i: int) -> tuple[_Tone, str] | None:
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


def _tone_hits(text: str, toks: _Tokens) -> list[_ToneHit]:
    hits: list[_ToneHit] = []
    for pattern, tone in _TONE_PHRASES:
        for m in pattern.finditer(text):
            if not toks.negated(toks.at(m.start())):
                hits.append(_ToneHit(m.start(), m.end(), m.group(), m.group(), tone))
    scan = _ToneScan(toks)
    for i, w in enumerate(toks.words):
        if w not in _TONE_KEYS or any(h.start <= toks.starts[i] < h.end for h in hits):
            continue
        found = scan.tone_of(i)
        if found is not None and not toks.negated(i):
            hits.append(_ToneHit(toks.starts[i], toks.ends[i], found[1], w, found[0]))
    return sorted(hits, key=lambda h: h.start)


def _base(word: str) -> str:
    word = " ".join(word.lower().split())
    return word.removeprefix("very ").strip()


# -- the check --------------------------------------------------------------------------------------
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
    return [n for t in texts if (n := _norm_quote(t))]


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
    """Whether ``text`` claims only what ``evidence`` supports, by the rules of the module docstring."""
    if not text or not text.strip():
        return Faithfulness(ok=False, problems=("empty reasoning",))
    ev = evidence
    problems = _Problems([])
    prepared = _prepare(text)  # same length as ``text``: spans index both

    def shown(start: int, end: int) -> str:
        return " ".join(text[start:end].split())

    # rule 5 first: quoted speech is taken out of the text the other rules read
    quotes = _quotes(prepared)
    subtitle = _norm_quote(ev.subtitle) if quotes else ""
    objective = _norm_quote(ev.visual_objective or "") if quotes else ""
    label = _norm_quote(ev.label or "") if quotes else ""
    clue_texts = _clue_texts(ev) if quotes else []
    masked_spans: list[tuple[int, int]] = []
    unverified: list[_Quote] = []
    for q in quotes:
        norm = _norm_quote(q.content)
        if not norm:
            masked_spans.append((q.start, q.end))
            continue
        parts = [p for part in _ELLIPSIS.split(q.content) if (p := _norm_quote(part))]
        spoken = bool(subtitle) and all(_contains(subtitle, p) for p in parts)
        if spoken or (objective and _contains(objective, norm)) or norm == label or _emotion_words(norm):
            masked_spans.append((q.start, q.end))
        elif any(_contains(c, norm) for c in clue_texts):
            continue  # clue words in quotes are still claims: left for rules 1-3
        elif q.words <= 2:
            unverified.append(q)  # maybe scare quotes: decided after the other rules
        else:
            masked_spans.append((q.start, q.end))
            unverified.append(q)
    body = _mask(prepared, masked_spans)
    toks = _Tokens(body)

    # rule 1: facial actions
    au = {_base(p) for p in ev.au_phrases}
    vo_text = _prepare(ev.visual_objective or "")
    vo_toks = _Tokens(vo_text)
    vo_face = {h.key for h in _face_hits(vo_text, vo_toks)}
    face_hits = _face_hits(body, toks)
    for h in face_hits:
        said = shown(h.start, h.end)
        if h.key in vo_face:
            continue
        if not ev.has_face:
            problems.add(h.start, f"mentions '{said}' but no face was analysed")
        elif h.supports & au:
            continue
        elif h.key == _SMILE and "lip corner depressor" in au:
            problems.add(
                h.start,
                f"{_CONTRADICTS}mentions '{said}' but the face clue has a lip corner depressor and no "
                "lip corner puller",
            )
        elif not au:
            problems.add(h.start, f"mentions '{said}' but no facial action was detected")
        else:
            problems.add(h.start, f"mentions '{said}' but the face clue has {_either(h.supports)}")
    if not ev.has_face and ev.visual_objective is None:
        for m in _GENERIC_FACE.finditer(body):
            if any(h.overlaps(m.start(), m.end()) for h in face_hits):
                continue
            if not toks.clause_negated(toks.at(m.start())):
                problems.add(
                    m.start(), f"describes the face ('{shown(m.start(), m.end())}') but no face was analysed"
                )

    # rules 2 and 3: tone
    clue_words = [" ".join(w.lower().split()) for w in ev.tone_words]
    base = {_base(w) for w in clue_words}
    tone_hits = _tone_hits(body, toks)
    for t in tone_hits:
        if not ev.has_voice:
            problems.add(t.start, f"says '{t.word}' but no voice was measured")
            continue
        if t.tone.supports & base or _base(t.token) in base:
            continue
        opposite = next((w for w in clue_words if _base(w) in t.tone.opposites), None)
        if opposite is not None:
            problems.add(t.start, f"{_CONTRADICTS}says '{t.word}' but the tone clue is '{opposite}'")
            continue
        same_dim = [w for w in clue_words if _DIM_OF.get(_base(w)) in t.tone.dims]
        if same_dim:
            problems.add(t.start, f"says '{t.word}' but the tone clue is '{same_dim[0]}'")
        else:
            dims = " or ".join(_DIM_TEXT[d] for d in sorted(t.tone.dims))
            problems.add(t.start, f"says '{t.word}' but the tone clue does not describe {dims}")

    # rule 4: behaviours
    supported = _subtitle_families(ev.subtitle)
    supported |= {h.key for h in _behaviour_hits(vo_text, vo_toks, ())}
    if "loud" in base and ev.has_voice:
        supported.add(_SHOUTING)
    for h in _behaviour_hits(body, toks, [(t.start, t.end) for t in tone_hits]):
        said = shown(h.start, h.end)
        if h.key in supported:
            continue
        if h.key != _SHOUTING:
            problems.add(h.start, f"mentions '{said}' but no clue shows {h.key}")
        elif not ev.has_voice:
            problems.add(h.start, f"mentions '{said}' but no voice was measured")
        elif (soft := next((w for w in clue_words if _base(w) == "soft"), None)) is not None:
            problems.add(h.start, f"{_CONTRADICTS}mentions '{said}' but the tone clue is '{soft}'")
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
    the same evidence; sentences whose evidence is absent are left out (see the module docstring)."""
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
    if _norm_quote(subtitle):
        end = "" if subtitle[-1] in ".!?…" else "."
        sentences.append(f'The person says: "{subtitle}"{end}')
    objective = " ".join((ev.visual_objective or "").replace('"', "'").split())
    if _norm_quote(objective):
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
