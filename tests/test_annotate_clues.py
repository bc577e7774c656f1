"""The MERR annotation logic without models: AU candidate labels, the coarse caption, the prompts,
label inference and fine reasoning through a scripted ChatLLM, and the filters."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np
import pytest

from emotion_llama.annotate.clues import (
    AU_LABEL_RULES,
    candidate_labels,
    clue_text,
    coarse_caption,
    frequent_aus,
)
from emotion_llama.annotate.filters import check_consistency, class_balance, near_duplicates
from emotion_llama.annotate.reasoning import (
    FINE_SYSTEM,
    fine_prompt,
    fine_reasoning,
    infer_labels,
    label_prompt,
)
from emotion_llama.backends.llm import ChatParams, Message
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.perception.action_units import AU_NAMES, AUTimeline


# -- candidate labels ----------------------------------------------------------------------------
def test_au_label_rules_are_spec_6_step_4():
    assert AU_LABEL_RULES == {
        "happy": ("AU06", "AU12", "AU14"),
        "sad": ("AU01", "AU04", "AU15", "AU14"),
        "surprise": ("AU01", "AU02", "AU05", "AU26"),
        "fear": ("AU01", "AU02", "AU04", "AU05", "AU07", "AU20", "AU26"),
        "angry": ("AU04", "AU05", "AU07", "AU23", "AU10", "AU17"),
        "contempt": ("AU12", "AU10", "AU14", "AU17"),
        "worried": ("AU28", "AU20"),
        "disgust": ("AU09", "AU15"),
    }
    assert all(au in AU_NAMES for aus in AU_LABEL_RULES.values() for au in aus)


def test_smile_is_happy():
    got = candidate_labels({"AU06": 2.1, "AU12": 3.0, "AU25": 1.5})
    assert got == [("happy", pytest.approx(2 / 3))]


def test_brows_up_and_jaw_drop_is_surprise_first():
    got = candidate_labels({"AU01": 2.0, "AU02": 1.8, "AU26": 2.5})
    # surprise 3/4 of its AUs; fear has 3 of 7 (< 50%), so it is not a candidate
    assert got == [("surprise", pytest.approx(0.75))]
    got = candidate_labels({"AU01": 2.0, "AU02": 1.8, "AU26": 2.5, "AU04": 1.0})
    # now fear has 4/7 >= 0.5 and sad 2/4: ordered by share
    assert [lab for lab, _ in got] == ["surprise", "fear", "sad"]
    assert [s for _, s in got] == pytest.approx([0.75, 4 / 7, 0.5])


def test_below_threshold_gives_nothing_and_threshold_is_inclusive():
    assert candidate_labels({"AU06": 0.79, "AU12": 0.5, "AU14": 0.0}) == []
    assert candidate_labels({"AU06": 0.8, "AU12": 0.8}) == [("happy", pytest.approx(2 / 3))]
    # both numbers are parameters
    assert candidate_labels({"AU06": 0.79, "AU12": 0.79}, threshold=0.5) == [("happy", pytest.approx(2 / 3))]
    assert candidate_labels({"AU06": 2.0, "AU12": 2.0}, min_share=0.9) == []


def test_equal_share_ties_go_to_the_stronger_aus():
    # worried (AU28+AU20) and disgust (AU09+AU15) each have 1 of 2; sad gets AU15 only: 1/4
    got = candidate_labels({"AU20": 1.0, "AU09": 3.0})
    assert got == [("disgust", 0.5), ("worried", 0.5)]
    got = candidate_labels({"AU20": 4.0, "AU09": 1.0})
    assert got == [("worried", 0.5), ("disgust", 0.5)]


def test_nan_and_missing_values_never_count():
    assert candidate_labels({"AU28": float("nan"), "AU20": None, "AU09": 0.1}) == []  # type: ignore[dict-item]
    with pytest.raises(EmotionLlamaError):
        candidate_labels({}, min_share=0.0)


def test_frequent_aus_counts_frames_and_skips_faceless_ones():
    names = ["AU01", "AU06", "AU12", "AU28"]
    nan = np.nan
    intensity = np.array(
        [
            [0.0, 2.0, 3.0, nan],
            [1.5, 2.0, 0.5, nan],
            [0.0, 0.2, 1.2, nan],
            [4.0, 4.0, 4.0, nan],  # no face here: must not count
        ]
    )
    presence = np.array([[0, 1, 1, 1], [1, 1, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]], dtype=bool)
    face = np.array([True, True, True, False])
    tl = AUTimeline(np.arange(4) * 0.1, names, intensity, None, face, "test")
    # AU06 and AU12 are active twice, AU01 once; AU12's mean (1.57) beats AU06's (1.4) in the tie
    assert frequent_aus(tl) == ["AU12", "AU06", "AU01"]
    assert frequent_aus(tl, top_k=1) == ["AU12"]
    assert frequent_aus(tl, threshold=2.5) == ["AU12"]
    # with presence flags, the presence-only AU28 (no intensity at all) counts from them (3 frames);
    # AU01..AU12 keep their intensity counts although their presence flags differ
    tl_of = AUTimeline(np.arange(4) * 0.1, names, intensity, presence, face, "openface")
    assert frequent_aus(tl_of) == ["AU28", "AU12", "AU06", "AU01"]
    nobody = AUTimeline(np.arange(4) * 0.1, names, intensity, None, np.zeros(4, bool), "test")
    assert frequent_aus(nobody) == []


# -- coarse caption ------------------------------------------------------------------------------
VO, VE, AT, ST = "a man in a suit", "lip corner puller, cheek raiser", "bright and lively", "I did it!"

#: Every combination of present (1) / missing (0) parts: (vo, ve, at, st) -> caption.
CAPTIONS = {
    (1, 1, 1, 1): "This person in the video is a man in a suit. The person's expression and actions include "
    "lip corner puller, cheek raiser, and the person's tone is bright and lively. Saying: I did it!",
    (1, 1, 1, 0): "This person in the video is a man in a suit. The person's expression and actions include "
    "lip corner puller, cheek raiser, and the person's tone is bright and lively.",
    (1, 1, 0, 1): "This person in the video is a man in a suit. The person's expression and actions include "
    "lip corner puller, cheek raiser. Saying: I did it!",
    (1, 1, 0, 0): "This person in the video is a man in a suit. The person's expression and actions include "
    "lip corner puller, cheek raiser.",
    (1, 0, 1, 1): "This person in the video is a man in a suit. The person's tone is bright and lively. "
    "Saying: I did it!",
    (1, 0, 1, 0): "This person in the video is a man in a suit. The person's tone is bright and lively.",
    (1, 0, 0, 1): "This person in the video is a man in a suit. Saying: I did it!",
    (1, 0, 0, 0): "This person in the video is a man in a suit.",
    (0, 1, 1, 1): "The person's expression and actions include lip corner puller, cheek raiser, and the "
    "person's tone is bright and lively. Saying: I did it!",
    (0, 1, 1, 0): "The person's expression and actions include lip corner puller, cheek raiser, and the "
    "person's tone is bright and lively.",
    (
        0,
        1,
        0,
        1,
    ): "The person's expression and actions include lip corner puller, cheek raiser. Saying: I did it!",
    (0, 1, 0, 0): "The person's expression and actions include lip corner puller, cheek raiser.",
    (0, 0, 1, 1): "The person's tone is bright and lively. Saying: I did it!",
    (0, 0, 1, 0): "The person's tone is bright and lively.",
    (0, 0, 0, 1): "Saying: I did it!",
}


def test_full_caption_is_the_spec_template_byte_exact():
    template = (
        "This person in the video is {vo}. The person's expression and actions include {ve}, and the "
        "person's tone is {at}. Saying: {st}"
    )
    assert coarse_caption(VO, VE, AT, ST) == template.format(vo=VO, ve=VE, at=AT, st=ST)


@pytest.mark.parametrize("mask", sorted(itertools.product((0, 1), repeat=4)))
def test_caption_leaves_out_missing_parts(mask):
    parts = [value if keep else None for value, keep in zip((VO, VE, AT, ST), mask, strict=True)]
    expected = CAPTIONS.get(mask, "")  # nothing present: an empty caption, nothing invented
    assert coarse_caption(*parts) == expected
    # blank strings are missing parts too
    blanks = [value if keep else "  " for value, keep in zip((VO, VE, AT, ST), mask, strict=True)]
    assert coarse_caption(*blanks) == expected


def test_caption_drops_a_models_trailing_full_stop_but_keeps_the_subtitle():
    got = coarse_caption(" a man in a suit. ", VE + ".", "bright and lively.", "Well...")
    assert got == (
        "This person in the video is a man in a suit. The person's expression and actions include "
        "lip corner puller, cheek raiser, and the person's tone is bright and lively. Saying: Well..."
    )


# -- clue text -----------------------------------------------------------------------------------
def test_clue_text_lines_in_order_and_absent_ones_left_out():
    record = {
        "subtitle": "I did it!",
        "audio_tone": "bright and lively",
        "visual_expression": ["lip corner puller", "cheek raiser"],
        "visual_objective": "a man in a suit",
        "candidate_labels": [["happy", 2 / 3], ("contempt", 0.5)],
    }
    assert clue_text(record) == (
        "- Visual expression: lip corner puller, cheek raiser\n"
        "- Visual objective: a man in a suit\n"
        "- Audio tone: bright and lively\n"
        "- Subtitle: I did it!\n"
        "- Candidate labels from facial action units: happy (67% of its AUs), contempt (50% of its AUs)"
    )
    short = {
        "visual_expression": "eyes closed",
        "visual_objective": None,
        "subtitle": "",
        "candidate_labels": [],
    }
    assert clue_text(short) == "- Visual expression: eyes closed"
    assert clue_text({"subtitle": " ", "audio_tone": None}) == ""
    # the pipeline stores candidates as dicts; bare names carry no share
    stored = {"candidate_labels": [{"label": "surprise", "share": 0.75}, "fear"]}
    assert clue_text(stored) == "- Candidate labels from facial action units: surprise (75% of its AUs), fear"
    # a conflict between the modalities is a clue of its own
    torn = {"subtitle": "my grandmother died", "conflict": True, "conflict_reason": "the face says happy"}
    assert clue_text(torn) == "- Subtitle: my grandmother died\n- Conflict: the face says happy"
    with pytest.raises(EmotionLlamaError):
        clue_text({"candidate_labels": [["happy", "lots"]]})
    with pytest.raises(EmotionLlamaError):
        clue_text({"visual_expression": 3})


# -- prompts -------------------------------------------------------------------------------------
def test_fine_prompts_byte_exact():
    assert FINE_SYSTEM == (
        "You are an emotion analysis expert. Please infer emotion label based on the given the emotional "
        "features."
    )
    assert fine_prompt("Subtitle: hi\n", "happy") == (
        "Subtitle: hi\nPlease sort out the correct emotional clues and infer why the person in the video "
        "feels happy.\nUse only the clues listed above. Do not mention any facial movement, tone of voice, "
        "sound or words that are not in the list."
    )
    with pytest.raises(EmotionLlamaError):
        fine_prompt("Subtitle: hi", "")
    with pytest.raises(EmotionLlamaError):
        fine_prompt("   ", "happy")


def test_label_prompt_offers_exactly_the_label_set():
    conv = label_prompt("Subtitle: hi", ("happy", "sad"))
    assert [m["role"] for m in conv] == ["system", "user"]
    assert conv[1]["content"] == (
        "Subtitle: hi\nWhich one of these emotion labels best describes the person in the video: happy, "
        "sad? Answer with the label only."
    )


# -- label inference and fine reasoning through a scripted ChatLLM -------------------------------
class ScriptedLLM:
    """A real ChatLLM whose answers are a fixed function of the prompt text. The functions under test
    build prompts, batch them and parse answers; a language model would only make these tests slow and
    non-deterministic, so this stands in for one and records what it was sent."""

    name = "scripted-test-llm"

    def __init__(self) -> None:
        self.calls: list[tuple[list[list[Message]], ChatParams]] = []

    def chat_many(self, conversations: Sequence[list[Message]], params: ChatParams) -> list[str]:
        self.calls.append(([list(c) for c in conversations], params))
        return [self._answer(c[-1]["content"]) for c in conversations]

    @staticmethod
    def _answer(prompt: str) -> str:
        feels = re.search(r"feels (\w+)\.$", prompt, re.M)
        if feels:
            return f"  The raised cheeks and the lively tone show joy, so the person feels {feels.group(1)}. "
        subtitle = re.search(r"^Subtitle: (.*)$", prompt, re.M)
        said = subtitle.group(1) if subtitle else ""
        if "won" in said:
            return "Happy."
        if "hate" in said:
            return "The person is not happy; the label is angry"
        return "I cannot tell from these clues."


def test_infer_labels_batches_once_and_parses_robustly():
    llm = ScriptedLLM()
    clues = ["Subtitle: we won the cup", "Subtitle: I hate this", "Visual expression: blink"]
    got = infer_labels(llm, clues, ("neutral", "angry", "happy"))
    assert got == ["happy", "angry", None]
    assert len(llm.calls) == 1
    sent, params = llm.calls[0]
    assert len(sent) == 3 and params.temperature == 0.0
    assert sent[0][1]["content"].endswith("neutral, angry, happy? Answer with the label only.")
    assert infer_labels(llm, [], ("happy",)) == [] and len(llm.calls) == 1  # no call for nothing
    # a clip without clues is not sent: the model could only invent them
    assert infer_labels(llm, ["", "Subtitle: we won"], ("happy",)) == [None, "happy"]
    assert len(llm.calls[-1][0]) == 1


def test_fine_reasoning_sends_system_and_prompt_per_clip_greedy():
    llm = ScriptedLLM()
    clues = ["Subtitle: we won", "Visual expression: brow lowerer"]
    got = fine_reasoning(llm, clues, ["happy", "angry"])
    assert got == [
        "The raised cheeks and the lively tone show joy, so the person feels happy.",
        "The raised cheeks and the lively tone show joy, so the person feels angry.",
    ]
    (sent, params), *rest = llm.calls
    assert not rest
    assert params.temperature == 0.0 and 200 <= params.max_tokens <= 300
    assert sent[1] == [
        {"role": "system", "content": FINE_SYSTEM},
        {"role": "user", "content": fine_prompt("Visual expression: brow lowerer", "angry")},
    ]
    got = fine_reasoning(llm, ["Subtitle: we won", "  "], ["happy", "sad"])
    assert got[1] == "" and got[0].endswith("feels happy.") and len(llm.calls[-1][0]) == 1
    with pytest.raises(EmotionLlamaError, match="no label"):
        fine_reasoning(llm, clues, ["happy", None])
    with pytest.raises(EmotionLlamaError, match="2 clue texts but 1 labels"):
        fine_reasoning(llm, clues, ["happy"])


def test_a_backend_losing_answers_is_an_error():
    class Lossy(ScriptedLLM):
        def chat_many(self, conversations, params):
            return super().chat_many(conversations, params)[:-1]

    with pytest.raises(EmotionLlamaError, match="1 answers for 2 prompts"):
        fine_reasoning(Lossy(), ["a", "b"], ["happy", "sad"])


# -- consistency ---------------------------------------------------------------------------------
def test_agreeing_record_passes():
    reasoning = "He smiles broadly and his voice is bright, so he feels happy."
    assert check_consistency("happy", [("happy", 2 / 3)], reasoning) is None


def test_reasoning_that_concludes_another_label_is_flagged():
    why = check_consistency(
        "happy", [("happy", 2 / 3)], "His brows are lowered and he shouts, so he is angry."
    )
    assert why is not None and "'angry'" in why and "'happy'" in why


def test_negated_mentions_do_not_count():
    # the only other label is negated: the reasoning concludes sad, like the label
    assert check_consistency("sad", [], "She is not happy at all; she sounds sad.") is None
    # the label negated and another one concluded: flagged
    assert check_consistency("sad", [], "He says he is fine, but he is not sad, he is angry.") is not None


def test_au_rule_flags_a_label_its_aus_speak_against():
    why = check_consistency("happy", [("surprise", 0.75)], "He feels happy.")
    assert why is not None and "'surprise'" in why and "75%" in why
    # the label among the candidates, even not first, agrees
    assert check_consistency("fear", [("surprise", 0.75), ("fear", 4 / 7)], None) is None
    # no AU evidence: nothing to contradict
    assert check_consistency("happy", [], None) is None
    # "clearly" is a parameter
    assert check_consistency("happy", [("surprise", 0.75)], None, clear_share=0.8) is None
    # a candidate outside the label set (disgust is not a MERR label) does not count
    assert check_consistency("sad", [("disgust", 0.5)], None) is None
    # bare label names count as fully supported candidates; stored dicts are read too
    assert check_consistency("sad", ["angry"], None) is not None
    assert check_consistency("sad", [{"label": "surprise", "share": 0.75}], None) is not None
    assert check_consistency("surprise", [{"label": "surprise", "share": 0.75}], None) is None


def test_neutral_and_doubt_are_exempt_from_the_au_rule():
    assert check_consistency("neutral", [("surprise", 1.0)], "The person looks calm.") is None
    assert check_consistency("doubt", [("happy", 1.0)], None) is None
    # but not from the reasoning rule
    assert check_consistency("neutral", [], "The person is clearly furious.") is not None


def test_unknown_label_and_empty_reasoning_are_flagged():
    assert "not in the label set" in (check_consistency("disgust", [], None) or "")
    assert check_consistency("happy", [], "   ") == "reasoning is empty"


# -- near duplicates -----------------------------------------------------------------------------
def test_near_duplicates_marks_the_earliest_match():
    base = "the person smiles widely and the tone is bright so the person feels happy today"
    texts = [
        base,
        "something else entirely about a sad clip with a low voice and tears",
        base.upper() + "!",  # same words: Jaccard 1
        base + " indeed",  # one shingle more: 13/14 = 0.93
        base.replace("bright", "dull"),  # three shingles changed: 10/16 = 0.63
        "",
        "",
    ]
    assert near_duplicates(texts) == [None, None, 0, 0, None, None, None]
    assert near_duplicates(texts, threshold=0.95) == [None, None, 0, None, None, None, None]
    assert near_duplicates(texts, threshold=0.5) == [None, None, 0, 0, 0, None, None]
    assert near_duplicates(["a b", "A, b."]) == [None, 0]  # short texts still compare
    with pytest.raises(EmotionLlamaError):
        near_duplicates(texts, threshold=0.0)


# -- class balance -------------------------------------------------------------------------------
def test_class_balance():
    got = class_balance(["happy", "sad", "happy", None, "happy", "angry", "sad", "angry", "angry", "angry"])
    assert got["total"] == 10 and got["labelled"] == 9 and got["unlabelled"] == 1
    assert list(got["counts"].items()) == [("angry", 4), ("happy", 3), ("sad", 2)]
    assert got["shares"] == pytest.approx({"angry": 4 / 9, "happy": 3 / 9, "sad": 2 / 9})
    assert got["imbalance_ratio"] == 2.0
    assert class_balance([None])["imbalance_ratio"] is None
    assert class_balance(["sad"])["imbalance_ratio"] == 1.0
