"""LLM judges: EMER clue and label overlap (SPEC 7) and open-vocabulary label extraction.

The original judge (gpt-3.5-turbo-16k-0613) is retired; any :class:`ChatLLM` serves, and its
name is written into every report. Replies are parsed leniently: the first number is the score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from emotion_llama.backends.llm import ChatLLM, ChatParams, Message

CLUE_SYSTEM = "You are an expert in the analysis of human emotions."
CLUE_PROMPT = (
    "Below are two descriptions of the emotional state of the same person in a video: a reference "
    "written by annotators and a prediction written by a model.\n"
    "First summarise the emotional state described by each, with the clues each gives (facial "
    "expression, tone of voice, words spoken). Then rate how much the emotion-related clues of the "
    "prediction overlap with those of the reference, on a scale from 1 (no overlap) to 10 (complete "
    "overlap).\n"
    "Answer in this form:\nscore: <a number from 1 to 10>\nreason: <one or two sentences>\n\n"
    "Reference: {reference}\n\nPrediction: {prediction}"
)
LABEL_PROMPT = (
    "Below are two descriptions of the emotional state of the same person in a video: a reference "
    "and a prediction.\n"
    "First reduce each description to the emotion words that most likely describe the person's "
    "state (one to three words each). Then rate the overlap of the two sets of emotion words on a "
    "scale from 1 (no overlap) to 10 (identical).\n"
    "Answer in this form:\nscore: <a number from 1 to 10>\nreason: <the two word sets>\n\n"
    "Reference: {reference}\n\nPrediction: {prediction}"
)
EXTRACT_PROMPT = (
    "Read the description of a person's emotional state below and list every emotion word that "
    "describes the person (for example: happy, anxious, disappointed). Output only the words, "
    "separated by commas. If there is none, output: none\n\nDescription: {text}"
)

_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)")


def parse_score(reply: str, low: float = 1.0, high: float = 10.0) -> float | None:
    """The first number in the reply (after an optional ``score:``), or None when there is none or
    it lies outside [low, high]."""
    m = re.search(r"score\s*[:=]?\s*(\d+(?:\.\d+)?)", reply, flags=re.IGNORECASE) or _NUMBER.search(reply)
    if not m:
        return None
    value = float(m.group(1))
    return value if low <= value <= high else None


def parse_word_list(reply: str) -> list[str]:
    """``"Happy, excited; relieved."`` -> ``["happy", "excited", "relieved"]``; ``none`` -> []."""
    text = reply.strip().splitlines()[0] if reply.strip() else ""
    text = re.sub(r"^[^:]*:\s*", "", text) if ":" in text[:40] else text
    words = [re.sub(r"[^a-z\- ]", "", w.lower()).strip() for w in re.split(r"[,;/\n]| and ", text)]
    return [w for w in words if w and w != "none" and len(w.split()) <= 3]


def _conversation(system: str, user: str) -> list[Message]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def judge_overlap(
    llm: ChatLLM, references: Sequence[str], predictions: Sequence[str], kind: str = "clue"
) -> list[tuple[float | None, str]]:
    """(score, raw reply) per pair; ``kind`` is ``clue`` or ``label``."""
    template = CLUE_PROMPT if kind == "clue" else LABEL_PROMPT
    convs = [
        _conversation(CLUE_SYSTEM, template.format(reference=r, prediction=p))
        for r, p in zip(references, predictions, strict=True)
    ]
    replies = llm.chat_many(convs, ChatParams(max_tokens=200, temperature=0.0))
    return [(parse_score(r), r) for r in replies]


def extract_emotion_words(llm: ChatLLM, texts: Sequence[str]) -> list[list[str]]:
    convs = [_conversation(CLUE_SYSTEM, EXTRACT_PROMPT.format(text=t)) for t in texts]
    replies = llm.chat_many(convs, ChatParams(max_tokens=60, temperature=0.0))
    return [parse_word_list(r) for r in replies]
