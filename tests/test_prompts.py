import random

import pytest

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.prompts import (
    EMOTION_INSTRUCTION,
    LABELS,
    REASON_INSTRUCTIONS,
    normalize_target,
    pick_instruction,
    prompt_segments,
    segments_to_string,
    user_text,
)

SUB = "I can't believe it"


def test_user_text_is_byte_exact():
    got = user_text(SUB, "emotion", EMOTION_INSTRUCTION)
    assert got == (
        "<video><VideoHere></video> <feature><FeatureHere></feature> The person in video says: "
        "I can't believe it.  [emotion] Please determine which emotion label in the video "
        "represents: happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt. "
    )


def test_inference_layout_golden_string():
    segs = prompt_segments(user_text(SUB, "emotion", EMOTION_INSTRUCTION), "inference", 256)
    assert segments_to_string(segs) == (
        "<s><s>[INST] <video><feat:0+260></video> <feature><FeatureHere></feature> The person in "
        "video says: I can't believe it.  [emotion] Please determine which emotion label in the "
        "video represents: happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt.  [/INST]"
    )


def test_training_layout_golden_string():
    segs = prompt_segments(user_text(SUB, "reason", REASON_INSTRUCTIONS[1]), "training", 256)
    assert segments_to_string(segs) == (
        "<s>[INST] <video><feat:0+256></video> <feature><feat:256+4></feature> The person in video "
        "says: I can't believe it.  [reason] What is the emotional state of the person in the "
        "video? Please tell me the reason.  [/INST]"
    )


def test_layout_errors():
    with pytest.raises(EmotionLlamaError, match="layout"):
        prompt_segments(user_text(SUB, "emotion", "x"), "other", 256)
    with pytest.raises(EmotionLlamaError, match="exactly once"):
        prompt_segments("no placeholder here", "inference", 256)
    with pytest.raises(EmotionLlamaError, match="unknown task"):
        user_text(SUB, "valence", "x")


def test_normalize_target_hand_cases():
    assert normalize_target("Happy.") == "happy"
    assert normalize_target('She says: "Oh my!" (smiling)  ~ok;  #1*') == "she says oh my smiling ok 1"
    assert normalize_target("a\nb") == "a\nb"  # a single newline survives, as in the authors' code
    assert normalize_target("a\n\nb") == "a b"
    long = " ".join(f"w{i}" for i in range(250))
    assert normalize_target(long).split(" ") == [f"w{i}" for i in range(200)]
    assert normalize_target(long, max_words=3) == "w0 w1 w2"


def test_instruction_pools():
    assert pick_instruction("emotion") == EMOTION_INSTRUCTION
    rng = random.Random(0)
    drawn = {pick_instruction("reason_v2", rng) for _ in range(200)}
    assert drawn == set(REASON_INSTRUCTIONS)
    assert LABELS[:6] == ("neutral", "angry", "happy", "sad", "worried", "surprise")
