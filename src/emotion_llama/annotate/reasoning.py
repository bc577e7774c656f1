"""MERR fine reasoning and label inference through any :class:`ChatLLM` (SPEC 6 step 9). No model here:
the functions build the prompts, send them in one batch and parse the answers, so they work the same
with a local model, an HTTP endpoint or a cache."""

from __future__ import annotations

from collections.abc import Sequence

from emotion_llama.backends.llm import ChatLLM, ChatParams, Message
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.prompts import LABELS, parse_label_robust

#: The authors' system prompt, byte-exact ("the given the" included): the fine set was written with it.
FINE_SYSTEM = (
    "You are an emotion analysis expert. "
    "Please infer emotion label based on the given the emotional features."
)
FINE_QUESTION = (
    "Please sort out the correct emotional clues and infer why the person in the video feels {label}."
)
#: Added after the authors' question: weak LLMs otherwise invent expressions, tones and events.
GROUNDING = (
    "Use only the clues listed above. Do not mention any facial movement, tone of voice, sound or "
    "words that are not in the list."
)
#: The second try of an answer that failed the faithfulness check.
RETRY_QUESTION = (
    "Your previous answer was: {previous}\nIt is not supported by the clues: {problems}. Answer again in "
    "two or three sentences, using only the clues listed above, and explain why the person in the "
    "video feels {label}."
)

LABEL_SYSTEM = "You are an emotion analysis expert."
#: For a user's own question about a clip: answer from the clues, never invent others.
QUESTION_SYSTEM = (
    "You are an emotion analysis expert. Answer the question about the person in the video from the "
    "emotional clues given; do not invent clues that are not listed."
)
LABEL_QUESTION = (
    "Which one of these emotion labels best describes the person in the video: {labels}? "
    "Answer with the label only."
)

#: Greedy, so a rerun (and the cache key) gives the same text; 256 tokens hold a MERR fine reasoning.
REASONING_PARAMS = ChatParams(max_tokens=256, temperature=0.0)
#: A label answer is a word or a short sentence.
LABEL_PARAMS = ChatParams(max_tokens=32, temperature=0.0)


def _clues(clues: str) -> str:
    text = clues.strip()
    if not text:
        raise EmotionLlamaError("the clue text is empty: there is nothing to reason from")
    return text


def fine_prompt(clues: str, label: str) -> str:
    """The user turn of the fine reasoning: the clue list, a newline, then exactly
    ``Please sort out the correct emotional clues and infer why the person in the video feels {label}.``
    and the :data:`GROUNDING` sentence on the next line (surrounding space of ``clues`` is dropped
    so the question always sits on its own line)."""
    if not label or not label.strip():
        raise EmotionLlamaError("fine_prompt: the label is empty; infer one first (infer_labels)")
    return f"{_clues(clues)}\n{FINE_QUESTION.format(label=label.strip())}\n{GROUNDING}"


def retry_conversation(clues: str, label: str, previous: str, problems: Sequence[str]) -> list[Message]:
    """The fine-reasoning conversation asked again after ``previous`` failed the faithfulness check
    with ``problems``: the same clues, then :data:`RETRY_QUESTION`."""
    if not label or not label.strip():
        raise EmotionLlamaError("retry_conversation: the label is empty")
    question = RETRY_QUESTION.format(
        previous=" ".join(previous.split()) or "(empty)",
        problems="; ".join(problems) or "it names evidence that is not listed",
        label=label.strip(),
    )
    return [
        {"role": "system", "content": FINE_SYSTEM},
        {"role": "user", "content": f"{_clues(clues)}\n{question}"},
    ]


def reasoning_params(max_new_tokens: int | None = None) -> ChatParams:
    """:data:`REASONING_PARAMS`, with ``max_new_tokens`` tokens when given."""
    if max_new_tokens is None:
        return REASONING_PARAMS
    if max_new_tokens < 1:
        raise EmotionLlamaError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    return ChatParams(max_tokens=max_new_tokens, temperature=REASONING_PARAMS.temperature)


def fine_conversation(clues: str, label: str) -> list[Message]:
    return [
        {"role": "system", "content": FINE_SYSTEM},
        {"role": "user", "content": fine_prompt(clues, label)},
    ]


def question_conversation(clues: str, question: str) -> list[Message]:
    """A conversation asking the user's own ``question`` about a clip, with its clue lines as context
    (the chat endpoint and the web page use it; the fine reasoning prompt stays the default)."""
    if not question or not question.strip():
        raise EmotionLlamaError("question_conversation: the question is empty")
    return [
        {"role": "system", "content": QUESTION_SYSTEM},
        {"role": "user", "content": f"{_clues(clues)}\n{question.strip()}"},
    ]


def label_prompt(clues: str, labels: Sequence[str] = LABELS) -> list[Message]:
    """A conversation asking for one label of ``labels`` for a clip that has none."""
    if not labels:
        raise EmotionLlamaError("label_prompt: the label set is empty")
    question = LABEL_QUESTION.format(labels=", ".join(labels))
    return [
        {"role": "system", "content": LABEL_SYSTEM},
        {"role": "user", "content": f"{_clues(clues)}\n{question}"},
    ]


def _ask(llm: ChatLLM, conversations: list[list[Message] | None], params: ChatParams) -> list[str | None]:
    """The stripped answers in one ``chat_many`` call; ``None`` where there is no conversation (a
    clip without clues: asking would only make the model invent them)."""
    todo = [i for i, c in enumerate(conversations) if c is not None]
    out: list[str | None] = [None] * len(conversations)
    if not todo:
        return out  # no call at all: some backends start a pool or a model for nothing
    sent = [c for c in conversations if c is not None]
    answers = llm.chat_many(sent, params)
    if len(answers) != len(sent):
        raise EmotionLlamaError(
            f"LLM {getattr(llm, 'name', '?')!r} returned {len(answers)} answers for {len(sent)} prompts"
        )
    for i, answer in zip(todo, answers, strict=True):
        out[i] = answer.strip()
    return out


def infer_labels(
    llm: ChatLLM,
    clue_texts: Sequence[str],
    labels: Sequence[str] = LABELS,
    params: ChatParams = LABEL_PARAMS,
) -> list[str | None]:
    """One label per clip from its clues (one batch, greedy), parsed with ``parse_label_robust``:
    synonyms and any case count, negated mentions do not, the last mention wins; ``None`` when the
    answer names no label of the set, and for a blank clue text (not sent)."""
    label_set = tuple(labels)
    answers = _ask(llm, [label_prompt(c, label_set) if c.strip() else None for c in clue_texts], params)
    return [None if a is None else parse_label_robust(a, label_set) for a in answers]


def fine_reasoning(
    llm: ChatLLM,
    clue_texts: Sequence[str],
    labels_per_clip: Sequence[str | None],
    params: ChatParams = REASONING_PARAMS,
) -> list[str]:
    """The fine reasoning text of each clip (SPEC 6 step 9), in one ``chat_many`` batch.

    A clip with a blank clue text is not sent and gets ``""``: there is nothing to reason from, and
    the model would make the clues up. Every clip needs a label (an error otherwise)."""
    if len(clue_texts) != len(labels_per_clip):
        raise EmotionLlamaError(
            f"fine_reasoning: {len(clue_texts)} clue texts but {len(labels_per_clip)} labels"
        )
    missing = [i for i, label in enumerate(labels_per_clip) if not label]
    if missing:
        raise EmotionLlamaError(
            f"fine_reasoning: clips {missing[:10]} have no label; infer them first (infer_labels) "
            "or leave them out"
        )
    conversations = [
        fine_conversation(c, str(lab)) if c.strip() else None
        for c, lab in zip(clue_texts, labels_per_clip, strict=True)
    ]
    return [a or "" for a in _ask(llm, conversations, params)]
