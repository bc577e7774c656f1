"""The label from face, voice and words: each modality's vote and their fusion (annotate/fusion.py),
checked against values worked out by hand from the documented rules. Fast: the lexicons are data
files (VADER bundled, the NRC lexicon from its offline package)."""

from __future__ import annotations

import pytest

from emotion_llama.annotate.clues import FaceVote
from emotion_llama.annotate.fusion import Vote, fuse, nrc_votes, voice_vote, words_vote
from emotion_llama.errors import EmotionLlamaError

LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt")
DFEW = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")


@pytest.fixture(scope="module", autouse=True)
def _lexicon() -> None:
    from emotion_llama.annotate.fusion import nrc_lexicon

    try:
        nrc_lexicon()
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("This is the best day of my whole life, I am so happy!", LABELS, "happy"),
        ("My grandmother died last night, and I miss her so much.", LABELS, "sad"),
        ("Get out of my house right now, I am furious with you!", LABELS, "angry"),
        ("Wow, I did not expect this at all, what a surprise!", LABELS, "surprise"),
        ("That smell is disgusting, it makes me feel sick.", DFEW, "disgust"),
        ("I am not happy at all.", LABELS, "sad"),  # negated joy: VADER's valence is negative
    ],
)
def test_words_vote(text: str, labels: tuple[str, ...], expected: str) -> None:
    vote = words_vote(text, labels)
    assert vote is not None and vote.label == expected, vote
    assert 0 < vote.confidence <= 1


def test_words_without_emotion_abstain() -> None:
    vote = words_vote("The meeting starts at nine tomorrow, in the second room on the left.", LABELS)
    assert vote is not None and vote.label is None and vote.confidence == 0
    assert words_vote("", LABELS) is None and words_vote(None, LABELS) is None


def test_nrc_votes_spread_one_vote_per_word_and_skip_negated_words() -> None:
    lexicon = {"die": frozenset({"fear", "sadness", "negative"}), "happy": frozenset({"joy", "positive"})}
    votes, words = nrc_votes("She died. I am not happy.", lexicon)
    assert votes == {"fear": 0.5, "sadness": 0.5} and words == ["died"]


def test_disgust_has_no_label_in_the_merr_set() -> None:
    vote = words_vote("That smell is disgusting, it makes me feel sick.", LABELS)
    assert vote is not None and vote.label != "disgust"


def test_voice_vote_is_arousal_against_the_reference() -> None:
    from emotion_llama.perception.prosody import REFERENCE

    def at(z: float) -> dict[str, float | str]:
        # every arousal measure at z standard deviations from its reference mean
        return {
            name: REFERENCE[name][0] + z * REFERENCE[name][1]
            for name in ("loudness", "speaking_rate", "pitch_range_semitones")
        } | {"rate_source": "words"}

    high = voice_vote(at(1.5), LABELS)
    assert high is not None and high.details["arousal"] == pytest.approx(1.5, abs=1e-3)
    assert high.supports == ("angry", "happy", "surprise", "fear") and high.confidence == pytest.approx(0.75)
    low = voice_vote(at(-1.0), LABELS)
    assert low is not None and low.supports == ("sad", "neutral") and low.confidence == pytest.approx(0.5)
    moderate = voice_vote(at(0.5), LABELS)
    assert moderate is not None and moderate.supports == () and moderate.details["level"] == "moderate"
    assert voice_vote(None, LABELS) is None


def _face(label: str | None, confidence: float) -> FaceVote:
    return FaceVote(label, confidence, {}, [])


def _words(label: str | None, confidence: float) -> Vote:
    return Vote("words", label, confidence, [], (label,) if label else ())


def test_agreeing_modalities_fuse_without_conflict() -> None:
    f = fuse(_face("happy", 0.6), None, _words("happy", 0.7), LABELS)
    assert (f.label, f.label_source, f.conflict) == ("happy", "fusion", False)
    assert f.scores == {"happy": pytest.approx(1.3)}


def test_disagreeing_face_and_words_are_a_conflict() -> None:
    f = fuse(_face("happy", 0.67), None, _words("sad", 0.56), LABELS)
    assert f.label == "happy" and f.label_source == "face" and f.conflict
    assert f.conflict_reason == "the face says happy, the words say sad"
    # weaker face: the words win, still a conflict
    f = fuse(_face("happy", 0.3), None, _words("sad", 0.56), LABELS)
    assert f.label == "sad" and f.label_source == "words" and f.conflict


def test_a_neutral_face_or_a_weak_vote_is_no_conflict() -> None:
    assert not fuse(_face("neutral", 0.3), None, _words("disgust", 0.8), DFEW).conflict
    assert not fuse(_face("happy", 0.6), None, _words("sad", 0.2), LABELS).conflict


def test_the_voice_breaks_ties_and_flags_a_mismatch() -> None:
    voice = Vote("voice", None, 0.8, [], ("angry", "happy", "surprise", "fear"), {"level": "high"})
    # face angry and words happy, equally confident: the voice supports both, the face wins the tie
    f = fuse(_face("angry", 0.5), voice, _words("happy", 0.5), LABELS)
    assert f.label == "angry" and f.label_source == "fusion"
    # a high-arousal voice with sad words: flagged
    f = fuse(None, voice, _words("sad", 0.9), LABELS)
    assert f.label == "sad" and f.conflict and "high arousal" in (f.conflict_reason or "")
    # the voice alone narrows to its group: the label set's first of them
    f = fuse(None, voice, None, LABELS)
    assert f.label_source == "voice" and f.label == "angry"


def test_nothing_to_fuse() -> None:
    f = fuse(None, None, None, LABELS)
    assert f.label is None and f.label_source is None and not f.conflict
