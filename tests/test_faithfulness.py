"""Faithfulness of LLM reasonings to the clues (annotate/faithfulness.py): pure functions, fast."""

from __future__ import annotations

import itertools
import random

import pytest

from emotion_llama.annotate.faithfulness import (
    Evidence,
    Faithfulness,
    check_reasoning,
    evidence_from_record,
    grounded_reasoning,
)
from emotion_llama.perception.action_units import AU_NAMES

HAPPY = Evidence(
    au_phrases=("lip corner puller", "cheek raiser", "lips part"),
    tone_words=("high-pitched", "loud", "fast", "lively"),
    subtitle="This is the best day of my whole life!",
    label="happy",
)
SAD = Evidence(
    au_phrases=("lip corner depressor", "inner brow raiser", "brow lowerer"),
    tone_words=("low-pitched", "soft", "slow", "very monotone"),
    subtitle="I miss her so much. I don't know what to do.",
    label="sad",
)
ANGRY = Evidence(
    au_phrases=("brow lowerer", "lid tightener", "lip tightener", "upper lid raiser"),
    tone_words=("very loud", "fast", "rough"),
    subtitle="Get out of my house right now!",
    label="angry",
)
NO_FACE = Evidence(tone_words=("soft", "slow"), subtitle="Whatever.", label="neutral", has_face=False)
NO_VOICE = Evidence(au_phrases=("lip corner puller",), label="happy", has_voice=False)
LAUGHING = Evidence(
    au_phrases=("lip corner puller", "jaw drop"),
    tone_words=("loud",),
    subtitle="hahaha oh my god, that's hilarious [laughter]",
)


# -- unfaithful texts: each must be caught, with the problem named ------------------------------------
UNFAITHFUL = [
    # rule 1: invented facial movement
    ("invented smile", SAD, "She smiles warmly.", "contradicts the clue: mentions 'smiles'"),
    ("smile without any AU", Evidence(tone_words=("soft",)), "She grins.", "no facial action was detected"),
    ("invented frown", HAPPY, "She frowns slightly.", "neither brow lowerer nor lip corner depressor"),
    ("invented raised brows", HAPPY, "She raises her eyebrows.", "inner brow raiser"),
    ("invented wide eyes", SAD, "Her eyes are wide.", "no upper lid raiser"),
    ("invented nose wrinkle", HAPPY, "Her nose wrinkles in disgust.", "no nose wrinkler"),
    ("invented closed eyes", HAPPY, "She closes her eyes.", "mentions 'closes her eyes'"),
    ("invented FACS phrase", HAPPY, "The lip corner depressor is active.", "no lip corner depressor"),
    ("invented AU code", HAPPY, "AU12 and AU15 are active.", "mentions 'AU15'"),
    ("face claim without face", NO_FACE, "She frowns while speaking softly.", "no face was analysed"),
    ("face mention without face", NO_FACE, "Her facial expression is blank.", "no face was analysed"),
    # rules 2 and 3: tone
    (
        "pitch contradiction",
        SAD,
        "Her voice is high-pitched.",
        "says 'high-pitched' but the tone clue is 'low-pitched'",
    ),
    ("loudness contradiction", SAD, "She speaks in a loud voice.", "contradicts the clue: says 'loud'"),
    (
        "rate contradiction",
        HAPPY,
        "She speaks slowly.",
        "contradicts the clue: says 'slowly' but the tone clue is 'fast'",
    ),
    ("intonation contradiction", SAD, "Her intonation is lively.", "the tone clue is 'very monotone'"),
    ("whisper vs loud", HAPPY, "She whispers the words.", "contradicts the clue: says 'whispers'"),
    ("deep voice vs high pitch", HAPPY, "Her deep voice conveys calm.", "says 'deep voice'"),
    ("invented voice quality", HAPPY, "She speaks in a hoarse voice.", "does not describe voice quality"),
    ("invented shaky voice", SAD, "Her voice trembles.", "says 'voice trembles'"),
    (
        "tone claim without voice",
        NO_VOICE,
        "She smiles and speaks loudly.",
        "says 'loudly' but no voice was measured",
    ),
    ("pace of speech", HAPPY, "The pace of her speech is slow.", "contradicts the clue: says 'slow'"),
    # rule 4: invented behaviour
    ("laughing, no laughter", SAD, "She laughs nervously.", "mentions 'laughs' but no clue shows laughter"),
    ("crying on a happy clip", HAPPY, "She is crying with joy.", "no clue shows crying"),
    ("tears", HAPPY, "There are tears in her eyes.", "mentions 'tears'"),
    ("shouting on a soft clip", SAD, "She shouts at him.", "contradicts the clue: mentions 'shouts'"),
    ("shouting, no loudness word", Evidence(tone_words=("fast",)), "He yells.", "the tone clue is not loud"),
    ("screaming without voice", NO_VOICE, "She screams.", "no voice was measured"),
    ("sighing", HAPPY, "She sighs deeply.", "no clue shows sighing"),
    ("trembling chin", SAD, "Her chin trembles.", "no clue shows trembling"),
    # rule 5: misquoted speech
    ("misquote", HAPPY, 'She says, "I hate this place so much."', 'quotes "I hate this place so much."'),
    ("curly misquote", HAPPY, "She says \u201cthis is the worst day\u201d.", "the subtitle does not say it"),
    (
        "single-quoted misquote",
        HAPPY,
        "She says 'I hate this place' and smiles.",
        'quotes "I hate this place"',
    ),
    ("quote without subtitle", Evidence(), 'He says "leave me alone".', "there is no subtitle"),
    # rule 7
    ("empty", HAPPY, "   \n", "empty reasoning"),
    # rule 8: a loop (what SmolLM2-135M wrote for a crying clip), numbered or not
    (
        "numbered loop",
        SAD,
        "The emotional clues I provided were:\n\n1. Lip corner depressor: Sad\n2. Inner brow raiser: Sad\n"
        + "".join(f"{i}. Lips stretched to the edge: Sad\n" for i in range(3, 20)),
        "repeats 'Lips stretched to the edge: Sad' 17 times",
    ),
    (
        "sentence loop",
        HAPPY,
        "She smiles. She is very happy. She is very happy! She is very happy.",
        "repeats 'She is very happy' 3 times",
    ),
]


@pytest.mark.parametrize(("name", "evidence", "text", "expected"), UNFAITHFUL, ids=[u[0] for u in UNFAITHFUL])
def test_unfaithful_texts_are_caught(name: str, evidence: Evidence, text: str, expected: str) -> None:
    result = check_reasoning(text, evidence)
    assert not result.ok, name
    assert any(expected in p for p in result.problems), result.problems


def test_contradictions_are_marked_as_such() -> None:
    worst = check_reasoning("Her voice is high-pitched and she smiles.", SAD)
    assert worst.contradicts
    assert worst.problems == (
        "contradicts the clue: says 'high-pitched' but the tone clue is 'low-pitched'",
        "contradicts the clue: mentions 'smiles' but the face clue has a lip corner depressor and no "
        "lip corner puller",
    )
    invented = check_reasoning("She laughs.", SAD)
    assert not invented.ok and not invented.contradicts


def test_problems_follow_text_order_without_repeats() -> None:
    result = check_reasoning("She laughs. She frowns. She laughs.", HAPPY)
    assert result.problems == (
        "mentions 'laughs' but no clue shows laughter",
        "mentions 'frowns' but the face clue has neither brow lowerer nor lip corner depressor",
    )


# -- faithful texts: each must pass -------------------------------------------------------------------
FAITHFUL = [
    (
        "brief example",
        Evidence(
            au_phrases=("lip corner puller", "cheek raiser"),
            tone_words=("loud", "fast"),
            subtitle="Oh wow, this is the best day ever!",
            label="happy",
        ),
        "She smiles broadly, her cheeks rise, and she speaks in a loud, fast voice, saying 'this is the "
        "best day'. She seems happy.",
    ),
    (
        "restated clues",
        HAPPY,
        "In the video, the woman's lip corners are pulled up into a smile and her cheeks are raised, "
        "suggesting genuine joy. Her tone is high-pitched and lively, and she exclaims, 'This is the best "
        "day of my whole life!' Taken together, these cues indicate she is happy.",
    ),
    (
        "FACS words and curly quote",
        HAPPY,
        "The person grins widely with parted lips; the cheek raiser and lip corner puller (AU06, AU12) "
        "signal a Duchenne smile. Speaking quickly and loudly with animated intonation, she says "
        "\u201cthe best day of my whole life\u201d. Happy.",
    ),
    (
        "sad restated",
        SAD,
        "Given the downturned lip corners and raised inner brows, together with a soft, slow and monotone "
        "voice, the speaker says 'I miss her so much', which suggests sadness.",
    ),
    (
        "negations",
        SAD,
        "She is not smiling, and she doesn't laugh or raise her voice. There is no shouting, no sign of "
        "laughter and no fast speech; without a hint of a smile, her voice is neither loud nor lively.",
    ),
    (
        "absence of a smile",
        SAD,
        "The absence of a smile, the lack of laughter and her brows drawn together suggest sadness.",
    ),
    (
        "non-voice uses of tone words",
        HAPPY,
        "She gives a slow smile, then a soft smile; she has high hopes, fast friends and sits in a quiet "
        "room. A quick smile follows, and she smiles and slowly nods.",
    ),
    (
        "tone words in ordinary phrasing",
        SAD,
        "Her voice is quite soft and low-pitched; she speaks slowly, in a deep, flat voice, at a slow "
        'pace: "I don\'t know what to do." The emotion is sad.',
    ),
    (
        "loud supports shouting and raised voice",
        ANGRY,
        "His brows are furrowed, his eyes are narrowed, lips pressed together. He raises his voice and "
        "shouts 'get out of my house' in a rough, very loud voice, speaking fast. Angry.",
    ),
    (
        "laughter in the subtitle",
        LAUGHING,
        "She laughs with her mouth open and says 'oh my god, that's hilarious' in a loud voice.",
    ),
    (
        "scene claims are not judged",
        HAPPY,
        "She looks at the camera with bright eyes, wearing a red sweater in a sunny kitchen. Her delivery "
        "is energetic.",
    ),
    (
        "no face, voice only",
        NO_FACE,
        "No face was visible, so only the voice helps: she speaks softly and slowly. She says "
        '"Whatever." Neutral.',
    ),
    ("no voice, face only", NO_VOICE, "She smiles silently; no voice was measured. Happy."),
    (
        "quoting clue words",
        SAD,
        'The tone clue says "low-pitched" and the face shows a "lip corner depressor": she is sad.',
    ),
    ("not only", LAUGHING, "She is not only smiling but laughing."),
    ("far cry", HAPPY, "It is a far cry from sadness; she smiles."),
    ("ellipsis in a quote", HAPPY, 'She says "this is ... the best day" and beams.'),
    ("a sentence said twice", SAD, "She looks sad. Her brows are drawn together. She looks sad."),
    ("short words repeated", HAPPY, "Yes. Yes. Yes. She smiles: happy."),
]


@pytest.mark.parametrize(("name", "evidence", "text"), FAITHFUL, ids=[f[0] for f in FAITHFUL])
def test_faithful_texts_pass(name: str, evidence: Evidence, text: str) -> None:
    result = check_reasoning(text, evidence)
    assert result.ok, (name, result.problems)
    assert result.problems == ()


def test_negation_does_not_reach_across_clauses() -> None:
    assert not check_reasoning("She is not sad, she smiles.", SAD).ok
    assert not check_reasoning("She does not look happy; she laughs.", SAD).ok
    assert not check_reasoning("There is no doubt she is smiling.", SAD).ok


def test_visual_objective_supports_face_and_behaviour() -> None:
    ev = Evidence(visual_objective="a smiling woman laughing with friends", has_face=False)
    assert check_reasoning("She smiles and laughs.", ev).ok
    assert not check_reasoning("She frowns.", ev).ok
    assert check_reasoning("Her face is lit by the sun.", ev).ok  # with a description the face may be named
    assert check_reasoning('The frame shows "a smiling woman laughing".', ev).ok


def test_sound_tags_in_the_subtitle() -> None:
    crying = Evidence(subtitle="I just (sobs) can't do this anymore")
    assert check_reasoning("She is crying.", crying).ok
    assert not check_reasoning("She laughs.", crying).ok
    assert check_reasoning("She sighs.", Evidence(subtitle="*sighs* fine.")).ok
    assert check_reasoning("He chuckles.", Evidence(subtitle="ha ha, very funny")).ok


def test_cjk_quote_as_a_sub_span() -> None:
    ev = Evidence(subtitle="我真的很难过，不知道怎么办。")
    assert check_reasoning("她说\u201c很难过\u201d。", ev).ok
    assert not check_reasoning("她说\u201c很开心\u201d。", ev).ok


def test_to_dict() -> None:
    result = check_reasoning("Her voice is high-pitched.", SAD)
    assert isinstance(result, Faithfulness)
    assert result.to_dict() == {
        "ok": False,
        "problems": ["contradicts the clue: says 'high-pitched' but the tone clue is 'low-pitched'"],
        "contradicts": True,
    }
    assert check_reasoning("She is sad.", SAD).to_dict() == {"ok": True, "problems": [], "contradicts": False}


# -- evidence_from_record -----------------------------------------------------------------------------
def test_evidence_from_record() -> None:
    record = {
        "name": "clip1",
        "label": "happy",
        "subtitle": " This is the best day. ",
        "visual_prior_list": ["lip corner puller", "cheek raiser"],
        "audio_prior_list": ["high-pitched", "very loud"],
        "visual_objective": None,
        "missing": ["visual objective: none gave no description"],
    }
    ev = evidence_from_record(record)
    assert ev == Evidence(
        au_phrases=("lip corner puller", "cheek raiser"),
        tone_words=("high-pitched", "very loud"),
        subtitle="This is the best day.",
        label="happy",
        visual_objective=None,
        has_face=True,
        has_voice=True,
    )
    no_face = evidence_from_record({**record, "missing": ["face: none found in 40 analysed frames"]})
    assert not no_face.has_face and no_face.has_voice
    no_speech = evidence_from_record({"missing": ["speech: no voiced speech in the audio"]})
    assert no_speech.has_face and not no_speech.has_voice
    no_audio = evidence_from_record({"missing": ["audio: the file has no audio stream"]})
    assert not no_audio.has_voice
    assert evidence_from_record({}) == Evidence()
    nulls = {
        "visual_prior_list": None,
        "audio_prior_list": None,
        "subtitle": None,
        "label": "",
        "missing": None,
    }
    assert evidence_from_record(nulls) == Evidence()
    vo = evidence_from_record({"visual_objective": "a man in a suit"})
    assert vo.visual_objective == "a man in a suit"


# -- grounded_reasoning -------------------------------------------------------------------------------
def test_grounded_reasoning_example() -> None:
    ev = Evidence(
        au_phrases=("lip corner puller", "cheek raiser"),
        tone_words=("high-pitched", "loud", "fast", "lively"),
        subtitle="This is the best day of my whole life.",
        label="happy",
    )
    assert grounded_reasoning(ev) == (
        "The face shows a lip corner puller and a cheek raiser. The voice is high-pitched, loud and fast, "
        'with lively intonation. The person says: "This is the best day of my whole life." These clues '
        "point to happy."
    )
    assert grounded_reasoning(ev, "surprise").endswith("These clues point to surprise.")
    assert grounded_reasoning(Evidence(tone_words=("very lively",))) == (
        "The voice has very lively intonation. The clues are not enough to name an emotion."
    )
    assert grounded_reasoning(Evidence(au_phrases=("inner brow raiser", "lips part", "eyes closed"))) == (
        "The face shows an inner brow raiser, lips part and eyes closed. The clues are not enough to name "
        "an emotion."
    )
    assert grounded_reasoning(Evidence(label="sad")) == "No clue was measured; the record's label is sad."


_PHRASES = [*AU_NAMES.values(), "eyes closed", "frequent blinking"]
_SUBTITLES = [
    "",
    "This is the best day of my whole life.",
    "hahaha [laughter] I can't stop laughing!",
    'He said "no" and I cried (sobs)',
    "Stop shouting at me, you're so loud!",
    "I'm... not sure... okay?",
    "我真的很难过。",
]
_OBJECTIVES = [None, "a woman smiling in a red coat", 'a man with "tears", crying and speaking loudly']
_LABELS = [None, "neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt"]


def _levels(low: str, high: str) -> list[str | None]:
    return [None, low, f"very {low}", high, f"very {high}"]


def _tone_words(rng: random.Random) -> tuple[str, ...]:
    picks = (
        rng.choice(_levels("low-pitched", "high-pitched")),
        rng.choice([None, "rough", "breathy", "hoarse"]),
        rng.choice(_levels("soft", "loud")),
        rng.choice(_levels("slow", "fast")),
        rng.choice(_levels("monotone", "lively")),
    )
    return tuple(w for w in picks if w)


def _assert_grounded(ev: Evidence) -> str:
    text = grounded_reasoning(ev)
    result = check_reasoning(text, ev)
    assert result.ok, (ev, text, result.problems)
    lower = text.lower()
    if not (ev.has_face and ev.au_phrases):
        assert "face" not in lower and not any(p in lower for p in AU_NAMES.values() if p != "blink")
    if not (ev.has_voice and ev.tone_words):
        assert "voice" not in lower and "intonation" not in lower
    if not ev.subtitle:
        assert "says" not in lower
    if ev.visual_objective is None:
        assert "frame" not in lower
    if ev.label is None:
        assert "not enough" in lower or "no emotion" in lower
    else:
        assert ev.label in text
    return text


def test_grounded_reasoning_passes_its_own_check_on_random_evidence() -> None:
    rng = random.Random(20240601)
    for _ in range(400):
        ev = Evidence(
            au_phrases=tuple(rng.sample(_PHRASES, rng.randint(0, 6))),
            tone_words=_tone_words(rng),
            subtitle=rng.choice(_SUBTITLES),
            label=rng.choice(_LABELS),
            visual_objective=rng.choice(_OBJECTIVES),
            has_face=rng.random() < 0.8,
            has_voice=rng.random() < 0.8,
        )
        _assert_grounded(ev)


def test_grounded_reasoning_passes_on_every_subset_of_a_clip() -> None:
    phrases = ("lip corner depressor", "inner brow raiser", "frequent blinking")
    words = ("very low-pitched", "hoarse", "soft", "very slow", "monotone")
    for k, (ps, ws) in enumerate(
        itertools.product(
            itertools.chain.from_iterable(
                itertools.combinations(phrases, n) for n in range(len(phrases) + 1)
            ),
            itertools.chain.from_iterable(itertools.combinations(words, n) for n in range(len(words) + 1)),
        )
    ):
        for has_face, has_voice in itertools.product((True, False), repeat=2):
            ev = Evidence(
                au_phrases=ps,
                tone_words=ws,
                subtitle=_SUBTITLES[k % len(_SUBTITLES)],
                label=_LABELS[k % len(_LABELS)],
                visual_objective=_OBJECTIVES[k % len(_OBJECTIVES)],
                has_face=has_face,
                has_voice=has_voice,
            )
            _assert_grounded(ev)


def test_grounded_reasoning_on_every_single_clue_word() -> None:
    for phrase in _PHRASES:
        assert phrase in _assert_grounded(Evidence(au_phrases=(phrase,)))
    for low, high in (
        ("low-pitched", "high-pitched"),
        ("soft", "loud"),
        ("slow", "fast"),
        ("monotone", "lively"),
    ):
        for word in (low, f"very {low}", high, f"very {high}"):
            assert word in _assert_grounded(Evidence(tone_words=(word,)))
    for word in ("rough", "breathy", "hoarse"):
        assert word in _assert_grounded(Evidence(tone_words=(word,)))


def test_grounded_reasoning_text_is_caught_on_other_evidence() -> None:
    """The grounded text of one clip is not faithful to an opposite clip: the check has teeth."""
    result = check_reasoning(grounded_reasoning(HAPPY), SAD)
    assert result.contradicts
    assert any("high-pitched" in p for p in result.problems)
    assert any("quotes" in p for p in result.problems)
