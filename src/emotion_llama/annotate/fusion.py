"""A label from face, voice and words: each modality's own vote, a documented fusion rule, and a
``conflict`` flag when they disagree. Pure functions (the lexicons are read once from their files).

The votes
---------
**face** (:func:`~emotion_llama.annotate.clues.face_vote`): the AU rules of SPEC 6 voted over the
clip's frames; confidence = the winning label's share-weighted frame count over the face frames.

**voice** (:func:`voice_vote`): prosody gives arousal, not a category. ``arousal`` is the mean of the
z-scores (against the prosody reference, :data:`~emotion_llama.perception.prosody.REFERENCE`) of
loudness, speaking rate and pitch range, the three cues of vocal arousal that hold across speakers
(Juslin & Laukka 2003, Psychological Bulletin 129(5): loud, fast and varied speech goes with
anger, joy, fear and surprise; soft, slow and flat speech with sadness and tenderness). Pitch
level is left out: it mostly says whether the speaker is a man or a woman. ``arousal >= 0.75``
is *high* and supports ``angry, happy, surprise, fear``; ``<= -0.75`` is *low* and supports
``sad, neutral``; in between the voice abstains. Confidence ``min(1, |arousal| / 2)``.

**words** (:func:`words_vote`): two real lexicons on the transcript.

* VADER (Hutto & Gilbert 2014; the ``nltk-vader-sentiment`` package, its lexicon bundled) gives
  the valence (``compound``, -1..1), negation and intensifiers included.
* The NRC Emotion Lexicon (Mohammad & Turney 2013; word-level associations with anger, disgust,
  fear, joy, sadness, surprise) counts emotion words. Words are looked up as written and with a
  plain English suffix stripped (``died`` -> ``die``); a word within three words after a negation
  (``not``, ``never``, ``n't``...) is skipped. Each word spreads one vote over its emotions.

  Rule: ``compound >= 0.35``: ``surprise`` if it has more NRC votes than joy or the text has an
  interjection of surprise (``wow``, ``whoa``, ``oh my god``, ``no way``, ``unbelievable``, ``what a
  surprise``), else ``happy``;
  ``compound <= -0.35``: the negative emotion (sadness, anger, disgust, fear, in this order on
  ties) with the most NRC votes, ``sad`` when there is none; otherwise the NRC emotion with the
  most votes when it has at least one, else the words abstain. NRC emotions map to labels as
  joy -> happy, sadness -> sad, anger -> angry, fear -> fear (``worried`` when the label set has no
  fear), surprise -> surprise, disgust -> disgust (no label when the set has none). Confidence:
  ``|compound|`` when the valence decided, 0.4 for an NRC-only vote.

The fusion rule (:func:`fuse`)
------------------------------
``score(label) = 1.0 * c_face * [face = label] + 1.0 * c_words * [words = label]
+ 0.5 * c_voice * [label in voice's set] / (size of voice's set within the labels)``; the label
is the highest score (ties: face, then words, then the label set's order). The voice's weight is
half because it only narrows the label to an arousal group. ``label_source`` says who decided:
``face``, ``voice`` or ``words`` when the winner has support from that modality alone, ``fusion``
when two or more support it. ``conflict`` is set when the face and the words both vote (a neutral
face, i.e. no expression, does not count) for different labels, or when the voice's arousal group
excludes the winning label with confidence >= 0.5; ``conflict_reason`` says which.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.prompts import NEGATIONS

HIGH_AROUSAL: tuple[str, ...] = ("angry", "happy", "surprise", "fear")
LOW_AROUSAL: tuple[str, ...] = ("sad", "neutral")
AROUSAL_STEP = 0.75
VALENCE_STEP = 0.35
NRC_ONLY_CONFIDENCE = 0.4
WEIGHTS = {"face": 1.0, "words": 1.0, "voice": 0.5}
#: A vote below this confidence is too weak to count as a disagreement.
CONFLICT_MIN_CONFIDENCE = 0.25
VOICE_CONFLICT_CONFIDENCE = 0.5

_NRC_TO_LABEL = {
    "joy": ("happy",),
    "sadness": ("sad",),
    "anger": ("angry",),
    "fear": ("fear", "worried"),
    "surprise": ("surprise",),
    "disgust": ("disgust",),
}
_NEGATIVE_ORDER = ("sadness", "anger", "disgust", "fear")
# the label parser's negations, and the pronouns of negation an emotion word can follow
_NEGATORS = NEGATIONS | {"nothing", "nobody", "none", "cannot"}
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")
#: Interjections of surprise, which neither lexicon marks as such.
_SURPRISE = re.compile(r"\b(wow|whoa|woah|oh my (god|gosh)|omg|no way|unbelievable|what a surprise)\b")


@dataclass(frozen=True)
class Vote:
    """One modality's vote."""

    modality: str
    label: str | None
    confidence: float
    #: What the vote rests on, in words a reader can check against the clip.
    evidence: list[str] = field(default_factory=list)
    #: Labels the vote supports (the voice's arousal group; the label itself otherwise).
    supports: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(float(self.confidence), 3),
            "supports": list(self.supports),
            "evidence": list(self.evidence),
            **self.details,
        }


@dataclass(frozen=True)
class Fusion:
    label: str | None
    label_source: str | None
    conflict: bool
    conflict_reason: str | None
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "label_source": self.label_source,
            "conflict": self.conflict,
            "conflict_reason": self.conflict_reason,
            "scores": {k: round(v, 3) for k, v in self.scores.items()},
        }


# -- words --------------------------------------------------------------------------------------------
def _nrc_default_path() -> Path:
    from emotion_llama.sources import offline_file

    return offline_file("nrc_emotion_lexicon")


@functools.cache
def nrc_lexicon(path: str | None = None) -> dict[str, frozenset[str]]:
    """word -> NRC emotions. ``path``: a JSON ``{word: [emotions]}`` (the offline package's copy, the
    default) or the official word-level file (``word<TAB>emotion<TAB>0|1`` lines)."""
    p = Path(path) if path else _nrc_default_path()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise EmotionLlamaError(f"{p}: cannot read the NRC lexicon ({exc.strerror or exc})") from None
    out: dict[str, set[str]] = {}
    if p.suffix.lower() == ".json":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise EmotionLlamaError(f"{p}: expected a JSON object word -> emotions")
        for word, emotions in data.items():
            out[str(word).lower()] = {str(e) for e in emotions}
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            parts = line.strip().split("\t")
            if len(parts) != 3 or parts[2] not in ("0", "1"):
                if line.strip():
                    raise EmotionLlamaError(f"{p}:{n}: expected 'word<TAB>emotion<TAB>0|1'")
                continue
            if parts[2] == "1":
                out.setdefault(parts[0].lower(), set()).add(parts[1])
    return {w: frozenset(e) for w, e in out.items()}


def _variants(word: str) -> list[str]:
    out = [word]
    for suffix, repl in (("ied", "y"), ("ies", "y"), ("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"),
                         ("d", ""), ("es", ""), ("s", ""), ("ly", "")):  # fmt: skip
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            out.append(word[: -len(suffix)] + repl)
    return out


def nrc_votes(text: str, lexicon: Mapping[str, frozenset[str]]) -> tuple[dict[str, float], list[str]]:
    """NRC emotion votes of a text (each emotion word spreads one vote over its emotions among the six
    of :data:`_NRC_TO_LABEL`) and the words that voted; negated words are skipped."""
    tokens = _TOKEN.findall(text.lower().replace("’", "'"))
    votes: dict[str, float] = {}
    words: list[str] = []
    for i, tok in enumerate(tokens):
        window = tokens[max(0, i - 3) : i]
        if any(t in _NEGATORS or t.endswith("n't") for t in window):
            continue
        for form in _variants(tok):
            # sorted: a frozenset's order changes with each process's string hash seed, and the
            # votes' order is written into records (and breaks ties)
            emotions = [e for e in sorted(lexicon.get(form, ())) if e in _NRC_TO_LABEL]
            if emotions:
                for e in emotions:
                    votes[e] = votes.get(e, 0.0) + 1.0 / len(emotions)
                words.append(tok)
                break
    return votes, words


def _label_for(emotion: str, labels: Sequence[str]) -> str | None:
    return next((lab for lab in _NRC_TO_LABEL[emotion] if lab in labels), None)


def words_vote(
    text: str | None, labels: Sequence[str], *, lexicon: Mapping[str, frozenset[str]] | None = None
) -> Vote | None:
    """The words' vote (see the module docstring); ``None`` for an empty transcript."""
    if not text or not text.strip():
        return None
    from vader import polarity_scores

    compound = float(polarity_scores(text)["compound"])
    votes, words = nrc_votes(text, nrc_lexicon() if lexicon is None else lexicon)
    details = {"valence": round(compound, 3), "nrc": {k: round(v, 2) for k, v in votes.items()}}
    label: str | None = None
    confidence = 0.0
    if compound >= VALENCE_STEP:
        surprised = votes.get("surprise", 0.0) > votes.get("joy", 0.0) or _SURPRISE.search(text.lower())
        emotion = "surprise" if surprised else "joy"
        label, confidence = _label_for(emotion, labels) or _label_for("joy", labels), abs(compound)
    elif compound <= -VALENCE_STEP:
        ranked = sorted(
            (e for e in _NEGATIVE_ORDER if votes.get(e, 0.0) > 0 and _label_for(e, labels)),
            key=lambda e: (-votes[e], _NEGATIVE_ORDER.index(e)),
        )
        label = _label_for(ranked[0], labels) if ranked else _label_for("sadness", labels)
        confidence = abs(compound)
    elif votes:
        order = list(_NRC_TO_LABEL)
        ranked = sorted(
            (e for e in votes if _label_for(e, labels)), key=lambda e: (-votes[e], order.index(e))
        )
        if ranked:
            label, confidence = _label_for(ranked[0], labels), NRC_ONLY_CONFIDENCE
    if label is None:
        return Vote("words", None, 0.0, [], (), details)
    evidence = [f"valence {compound:+.2f} (VADER)"] + (
        [f"emotion words: {', '.join(words)}"] if words else []
    )
    return Vote("words", label, min(1.0, confidence), evidence, (label,), details)


# -- voice --------------------------------------------------------------------------------------------
AROUSAL_MEASURES = ("loudness", "speaking_rate", "pitch_range_semitones")


def voice_vote(
    prosody: Any, labels: Sequence[str], reference: Mapping[str, tuple[float, float]] | None = None
) -> Vote | None:
    """The voice's arousal vote (see the module docstring); ``None`` without measured speech.
    ``prosody`` is a :class:`~emotion_llama.perception.prosody.Prosody` or its stored dict; the
    z-scores are :func:`~emotion_llama.perception.prosody.zscores` (a rate counted by loudness peaks
    is scored against its own reference)."""
    if prosody is None:
        return None
    from emotion_llama.perception.prosody import REFERENCE, zscores

    z = zscores(prosody, REFERENCE if reference is None else reference)
    zs = [z[name] for name in AROUSAL_MEASURES if name in z and math.isfinite(z[name])]
    if not zs:
        return None
    arousal = sum(zs) / len(zs)
    details = {"arousal": round(arousal, 3)}
    if arousal >= AROUSAL_STEP:
        group, word = HIGH_AROUSAL, "high"
    elif arousal <= -AROUSAL_STEP:
        group, word = LOW_AROUSAL, "low"
    else:
        return Vote("voice", None, 0.0, ["moderate arousal"], (), {**details, "level": "moderate"})
    supports = tuple(lab for lab in group if lab in labels)
    return Vote(
        "voice",
        None,
        min(1.0, abs(arousal) / 2),
        [f"{word} vocal arousal (loudness, rate and pitch range: z {arousal:+.2f})"],
        supports,
        {**details, "level": word},
    )


# -- fusion -------------------------------------------------------------------------------------------
def fuse(face: Any, voice: Vote | None, words: Vote | None, labels: Sequence[str]) -> Fusion:
    """The fused label, who decided it, and whether the modalities conflict (module docstring).
    ``face`` is a :class:`~emotion_llama.annotate.clues.FaceVote` or ``None``."""
    scores: dict[str, float] = {}
    support: dict[str, set[str]] = {}

    def add(label: str, amount: float, modality: str) -> None:
        if label in labels and amount > 0:
            scores[label] = scores.get(label, 0.0) + amount
            support.setdefault(label, set()).add(modality)

    if face is not None and face.label:
        add(face.label, WEIGHTS["face"] * face.confidence, "face")
    if words is not None and words.label:
        add(words.label, WEIGHTS["words"] * words.confidence, "words")
    if voice is not None and voice.supports:
        share = WEIGHTS["voice"] * voice.confidence / len(voice.supports)
        for lab in voice.supports:
            add(lab, share, "voice")
    if not scores:
        return Fusion(None, None, False, None, {})
    order = list(labels)

    def rank(lab: str) -> tuple[float, int, int, int]:
        return (
            scores[lab],
            int(face is not None and face.label == lab),
            int(words is not None and words.label == lab),
            -order.index(lab),
        )

    best = max(scores, key=rank)
    who = support[best]
    source = next(iter(who)) if len(who) == 1 else "fusion"
    reasons = []
    if (
        face is not None
        and words is not None
        and face.label
        and words.label
        and face.label != "neutral"
        and face.label != words.label
        and face.confidence >= CONFLICT_MIN_CONFIDENCE
        and words.confidence >= CONFLICT_MIN_CONFIDENCE
    ):
        reasons.append(f"the face says {face.label}, the words say {words.label}")
    if (
        voice is not None
        and voice.supports
        and voice.confidence >= VOICE_CONFLICT_CONFIDENCE
        and best not in voice.supports
    ):
        level = voice.details.get("level", "")
        reasons.append(f"the voice's {level} arousal does not fit {best}")
    return Fusion(best, source, bool(reasons), "; ".join(reasons) or None, dict(sorted(scores.items())))
