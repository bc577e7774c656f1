"""The verifiable rewards of stage 3 (GRPO), each a pure function of one answer and its clip.

An answer is the decoded text of one sampled completion (after
:func:`~emotion_llama.prompts.clean_generation`). Two answer forms exist
(``grpo.answer_format``):

* ``plain``, the project's own: a text whose last space-separated word is a label of the label
  set, exactly (``happy``, ``the person is happy``), as the authors' scorer reads answers
  (:func:`~emotion_llama.prompts.parse_last_word`); no ``<think>``/``<answer>`` tag.
* ``think``: ``<think>REASONING</think><answer>ANSWER</answer>``, nothing around the two blocks but
  white space, each tag once, both contents non-empty and ``ANSWER`` in the plain form (with
  ``max_think_words``, a reasoning of more words fails).

The components (each in [0, 1]):

* :func:`accuracy_reward`: 1 when the label read from the answer is the gold label. The label is
  read from the last ``<answer>`` block when there is one, else from the whole text without tags;
  ``robust`` uses :func:`~emotion_llama.prompts.parse_label_robust` (label words and synonyms in
  any case, negated mentions skipped, the last one wins), ``last_word`` the authors' rule. Neither
  falls back on ``neutral``: the authors' scorer counts an unreadable answer as neutral, a reward
  that did so would pay noise on every neutral clip. (The robust parser reads every label word
  itself, so the last-word rule adds nothing after it but the negated ones: "she is not sad".)
* :func:`format_reward`: 1 when the answer has the configured form.
* :func:`ov_reward`: the open-vocabulary overlap, the emotion-wheel Fs of
  :func:`~emotion_llama.evaluate.openvocab.ov_scores` between the answer's comma-separated words
  and the gold words (0 when either maps to nothing on the wheels).
* :func:`faithfulness_reward`: 1 when the reasoning (the ``<think>`` block, or the whole answer
  in the plain form) passes :func:`~emotion_llama.annotate.faithfulness.check_reasoning` against the
  clip's clues.

:class:`RewardScorer` weighs them into the total reward (``rewards:`` weights of the recipe).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emotion_llama.prompts import clean_generation, parse_label_robust
from emotion_llama.train.config import GrpoConfig, TrainError

if TYPE_CHECKING:
    from emotion_llama.annotate.faithfulness import Evidence
    from emotion_llama.evaluate.openvocab import EmotionWheels

COMPONENTS: tuple[str, ...] = ("accuracy", "format", "ov", "faithful")

_TAG = re.compile(r"</?\s*(?:think|answer)\s*>", re.IGNORECASE)
_THINK_FORM = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def strip_tags(text: str) -> str:
    """``text`` without any ``<think>``/``<answer>`` tag (their contents kept), spaces collapsed."""
    return " ".join(_TAG.sub(" ", text).split())


def answer_part(text: str) -> str:
    """What the label is read from: the last ``<answer>`` block's content, else the whole text
    without tags."""
    blocks = _ANSWER_BLOCK.findall(text)
    return strip_tags(blocks[-1]) if blocks else strip_tags(text)


def reasoning_part(text: str) -> str:
    """What the faithfulness check reads: the ``<think>`` blocks' contents, else the whole text
    without tags (a plain answer is its own reasoning)."""
    blocks = _THINK_BLOCK.findall(text)
    return strip_tags(" ".join(blocks)) if blocks else strip_tags(text)


def last_word_label(text: str, labels: Sequence[str]) -> str | None:
    """The authors' rule without its default: the last space-separated word of the cleaned text
    when it is a label, exactly (case and punctuation count), else ``None``."""
    cleaned = clean_generation(text)
    last = cleaned.split(" ")[-1] if cleaned else ""
    return last if last in labels else None


def read_label(text: str, labels: Sequence[str], parser: str = "robust") -> str | None:
    """The label an answer names (see the module docstring), ``None`` when it names none."""
    if parser == "last_word":
        return last_word_label(text, labels)
    if parser != "robust":
        raise TrainError(f"unknown parser {parser!r}; choose robust or last_word")
    return parse_label_robust(text, tuple(labels))


def is_plain_form(text: str, labels: Sequence[str]) -> bool:
    """No tag, not empty, and the last word is a label."""
    return not _TAG.search(text) and last_word_label(text, labels) is not None


def is_think_form(text: str, labels: Sequence[str], max_think_words: int | None = None) -> bool:
    """``<think>R</think><answer>A</answer>``: each tag once, ``R`` not empty (at most
    ``max_think_words`` words), ``A`` in the plain form."""
    match = _THINK_FORM.fullmatch(text)
    if match is None:
        return False
    think, answer = match.group("think"), match.group("answer")
    if _TAG.search(think) or not think.strip():
        return False
    if max_think_words is not None and len(think.split()) > max_think_words:
        return False
    return is_plain_form(answer.strip(), labels)


def accuracy_reward(text: str, gold: str, labels: Sequence[str], parser: str = "robust") -> float:
    """1.0 when the label read from the answer is ``gold`` (compared lower-cased), else 0.0."""
    found = read_label(answer_part(text), labels, parser)
    return 1.0 if found is not None and found == gold.strip().lower() else 0.0


def format_reward(
    text: str, answer_format: str, labels: Sequence[str], max_think_words: int | None = None
) -> float:
    """1.0 when the answer has the form ``answer_format`` (``plain`` or ``think``), else 0.0."""
    if answer_format == "plain":
        return 1.0 if is_plain_form(text, labels) else 0.0
    if answer_format == "think":
        return 1.0 if is_think_form(text, labels, max_think_words) else 0.0
    raise TrainError(f"unknown answer format {answer_format!r}; choose plain or think")


def ov_reward(text: str, gold_words: Sequence[str], wheels: EmotionWheels) -> float:
    """The emotion-wheel Fs (mean over the wheels) of the answer's comma-separated words against
    ``gold_words``; 0.0 when the gold maps to nothing or the answer names no wheel word."""
    from emotion_llama.evaluate.openvocab import ov_scores, split_labels

    predicted = split_labels(answer_part(text))
    if not gold_words or not predicted:
        return 0.0
    fs = float(ov_scores([list(gold_words)], [predicted], wheels)["fs"])
    return 0.0 if math.isnan(fs) else fs


def faithfulness_reward(text: str, evidence: Evidence) -> float:
    """1.0 when the reasoning passes the faithfulness check against the clip's clues, else 0.0
    (an empty reasoning fails it)."""
    from emotion_llama.annotate.faithfulness import check_reasoning

    return 1.0 if check_reasoning(reasoning_part(text), evidence).ok else 0.0


@dataclass(frozen=True)
class Target:
    """What one prompt's answers are scored against."""

    #: The clip's gold label (its emotion target).
    gold: str
    #: The gold emotion words for the open-vocabulary reward (default: the gold split at commas).
    gold_words: tuple[str, ...] = ()
    #: The clip's clues for the faithfulness reward.
    evidence: Evidence | None = None


@dataclass
class RewardScorer:
    """The weighted reward of ``grpo.rewards`` over a batch of answers."""

    cfg: GrpoConfig
    labels: tuple[str, ...]
    wheels: EmotionWheels | None = None
    weights: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.weights = self.cfg.rewards.as_dict()
        if self.weights["ov"] > 0 and self.wheels is None:
            raise TrainError("rewards.ov > 0 needs the emotion-wheel tables (grpo.wheels)")

    def components(self, text: str, target: Target) -> dict[str, float]:
        """Each component of one answer (accuracy always; the others when weighted)."""
        cfg = self.cfg
        out = {"accuracy": accuracy_reward(text, target.gold, self.labels, cfg.parser)}
        if self.weights["format"] > 0:
            out["format"] = format_reward(text, cfg.answer_format, self.labels, cfg.max_think_words)
        if self.weights["ov"] > 0:
            assert self.wheels is not None
            words = target.gold_words or tuple(w.strip() for w in target.gold.split(",") if w.strip())
            out["ov"] = ov_reward(text, words, self.wheels)
        if self.weights["faithful"] > 0:
            if target.evidence is None:
                raise TrainError("rewards.faithful > 0 but a clip has no clues (grpo.clues)")
            out["faithful"] = faithfulness_reward(text, target.evidence)
        return out

    def score(self, texts: Sequence[str], targets: Sequence[Target]) -> dict[str, list[float]]:
        """Per answer: every computed component and ``reward``, their weighted sum."""
        if len(texts) != len(targets):
            raise TrainError(f"{len(texts)} answers but {len(targets)} targets")
        rows = [self.components(t, g) for t, g in zip(texts, targets, strict=True)]
        out: dict[str, list[float]] = {k: [r[k] for r in rows] for k in COMPONENTS if rows and k in rows[0]}
        out["reward"] = [sum(self.weights[k] * v for k, v in r.items()) for r in rows]
        return out
