"""Prompts, tasks, instruction pools, label sets and target normalisation (SPEC 2.3). No torch.

The released checkpoints only answer well to the exact text they were trained and evaluated
with, so every string here is byte-exact, spaces included. The sequence layouts are described
as a list of *segments* (text to tokenise, special tokens, feature slots); the processor turns
them into ids, the model fills the slots with projected features.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from emotion_llama.errors import EmotionLlamaError

#: The nine labels of MERR, in the index order of the authors' code.
LABELS: tuple[str, ...] = (
    "neutral",
    "angry",
    "happy",
    "sad",
    "worried",
    "surprise",
    "fear",
    "contempt",
    "doubt",
)
#: MER2023 / MER2024 classification labels.
MER_LABELS: tuple[str, ...] = LABELS[:6]
#: DFEW's label numbers 1..7 in the dataset's own order.
DFEW_LABELS: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
#: Named label sets for ``--label-set``.
LABEL_SETS: dict[str, tuple[str, ...]] = {"mer6": MER_LABELS, "merr9": LABELS, "dfew7": DFEW_LABELS}

Task = Literal["emotion", "reason", "reason_v2"]
TASKS: tuple[str, ...] = ("emotion", "reason", "reason_v2")

EMOTION_INSTRUCTION = (
    "Please determine which emotion label in the video represents: happy, sad, neutral, "
    "angry, worried, surprise, fear, contempt, doubt."
)
#: The 6-label wording used for MER2024; the authors found the 9-label one better even there.
EMOTION_INSTRUCTION_6 = (
    "Please determine which emotion label in the video represents: happy, sad, neutral, "
    "angry, worried, surprise."
)
REASON_INSTRUCTIONS: tuple[str, ...] = (
    "Please analyze all the clues in the video and reason out the emotional label of the person "
    "in the video.",
    "What is the emotional state of the person in the video? Please tell me the reason.",
    "What are the facial expressions and vocal tone used in the video? What is the intended "
    "meaning behind his words? Which emotion does this reflect?",
    "Please integrate information from various modalities to infer the emotional category of "
    "the person in the video.",
    "Could you describe the emotion-related features of the individual in the video? What "
    "emotional category do they fall into?",
)

VIDEO_PLACEHOLDER = "<VideoHere>"
FEATURE_PLACEHOLDER = "<FeatureHere>"
USER_TEXT = (
    "<video><VideoHere></video> <feature><FeatureHere></feature> "
    "The person in video says: {subtitle}.  [{task}] {instruction} "
)


def resolve_label_set(spec: str) -> tuple[str, ...]:
    """A label set by name (``mer6``, ``merr9``, ``dfew7``: :data:`LABEL_SETS`) or from a text file
    with one label per line: blank lines and ``#`` comments are skipped, labels are lower-cased, a
    repeated label is refused with its line number."""
    named = LABEL_SETS.get(spec.strip().lower())
    if named is not None:
        return named
    path = Path(spec).expanduser()
    if not path.is_file():
        raise EmotionLlamaError(f"label set {spec!r}: not one of {', '.join(LABEL_SETS)} and no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EmotionLlamaError(f"{path}: cannot read the label set ({exc})") from None
    labels: list[str] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        label = raw.split("#", 1)[0].strip().lower()
        if not label:
            continue
        if label in first_line:
            raise EmotionLlamaError(
                f"{path}:{number}: label {label!r} repeats the one of line {first_line[label]}"
            )
        first_line[label] = number
        labels.append(label)
    if not labels:
        raise EmotionLlamaError(f"{path}: no labels (one per line; '#' starts a comment)")
    return tuple(labels)


def instruction_pool(task: str) -> tuple[str, ...]:
    if task == "emotion":
        return (EMOTION_INSTRUCTION,)
    if task in ("reason", "reason_v2"):
        return REASON_INSTRUCTIONS
    raise EmotionLlamaError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")


def default_instruction(task: str) -> str:
    """The instruction inference asks ``task`` with: the first of its pool (for the reasoning
    tasks the one the EMER benchmark uses, "Please analyze all the clues ...")."""
    return instruction_pool(task)[0]


def pick_instruction(task: str, rng: random.Random | None = None) -> str:
    """One instruction of the task's pool (drawn at random for the reasoning tasks)."""
    pool = instruction_pool(task)
    return pool[0] if len(pool) == 1 else (rng or random).choice(pool)


def user_text(subtitle: str, task: str, instruction: str) -> str:
    """The user turn, exactly: note the double space before ``[`` and the trailing space."""
    if task not in TASKS:
        raise EmotionLlamaError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return USER_TEXT.format(subtitle=subtitle, task=task, instruction=instruction)


_PUNCT = re.compile(r"[.!\"()*#:;~]")
_WS_RUN = re.compile(r"\s{2,}")


def normalize_target(text: str, max_words: int = 200) -> str:
    """Training targets: lower-case, the characters ``. ! " ( ) * # : ; ~`` become spaces,
    runs of white space collapse to one space, ends are trimmed, then cut to ``max_words``."""
    text = _PUNCT.sub(" ", text.lower())
    text = _WS_RUN.sub(" ", text)
    text = text.rstrip("\n").strip(" ")
    words = text.split(" ")
    if len(words) > max_words:
        text = " ".join(words[:max_words])
    return text


# -- sequence layouts --------------------------------------------------------------------------
@dataclass(frozen=True)
class Text:
    """A piece of text, tokenised without special tokens."""

    text: str


@dataclass(frozen=True)
class Bos:
    """The tokenizer's begin-of-sequence token."""


@dataclass(frozen=True)
class Slot:
    """``count`` feature vectors go here: ``start`` is the index of the first of them in the
    model's [EVA groups, local, temporal, audio, CLS] order."""

    start: int
    count: int


Segment = Text | Bos | Slot


def prompt_segments(
    user: str, layout: str, num_groups: int, template: str = "[INST] {} [/INST]"
) -> list[Segment]:
    """The prompt of one sample as segments (SPEC 2.3).

    ``training``: BOS, then the templated text split at both placeholders; the ``num_groups``
    EVA embeddings replace ``<VideoHere>``, the other four replace ``<FeatureHere>``.

    ``inference`` (the authors' evaluation and demo code, which produced the published scores):
    the text ``<s>`` + template is split at ``<VideoHere>`` only; the first piece is tokenised
    with special tokens, so the sequence opens with two BOS (the tokenizer's and the literal
    ``<s>``); all ``num_groups + 4`` embeddings replace ``<VideoHere>``; ``<FeatureHere>`` stays
    as literal text.
    """
    wrapped = template.format(user)
    total = num_groups + 4
    if layout == "training":
        head, rest = _split_once(wrapped, VIDEO_PLACEHOLDER)
        mid, tail = _split_once(rest, FEATURE_PLACEHOLDER)
        return [
            Bos(),
            Text(head),
            Slot(0, num_groups),
            Text(mid),
            Slot(num_groups, 4),
            Text(tail),
        ]
    if layout == "inference":
        head, tail = _split_once(wrapped, VIDEO_PLACEHOLDER)
        return [Bos(), Bos(), Text(head), Slot(0, total), Text(tail)]
    raise EmotionLlamaError(f"unknown layout {layout!r}; choose 'training' or 'inference'")


def segments_to_string(segments: list[Segment], bos: str = "<s>") -> str:
    """A readable rendering (slots as ``<feat:start+count>``) for logs and golden tests."""
    out = []
    for s in segments:
        if isinstance(s, Text):
            out.append(s.text)
        elif isinstance(s, Bos):
            out.append(bos)
        else:
            out.append(f"<feat:{s.start}+{s.count}>")
    return "".join(out)


def _split_once(text: str, marker: str) -> tuple[str, str]:
    parts = text.split(marker)
    if len(parts) != 2:
        raise EmotionLlamaError(
            f"the prompt must contain {marker} exactly once, found {len(parts) - 1}: {text[:80]!r}"
        )
    return parts[0], parts[1]


# -- answer parsing ------------------------------------------------------------------------------
def clean_generation(text: str) -> str:
    """What the authors' ``generate`` returned: the text before ``</s>``, without ``<s>``, after the
    last ``[/INST]``, stripped."""
    return text.split("</s>")[0].replace("<s>", "").split("[/INST]")[-1].strip()


def parse_last_word(text: str, labels: tuple[str, ...] = MER_LABELS, default: str = "neutral") -> str:
    """The authors' rule: the last space-separated token of the cleaned answer, compared exactly
    (case and punctuation included) with the label set; anything else counts as ``default``.
    So ``"...is happy."`` and ``"Happy"`` score as neutral, ``"not sad but angry"`` as angry."""
    last = clean_generation(text).split(" ")[-1]
    return last if last in labels else default


#: Words that name each label (word forms and close synonyms), for the robust parser.
LABEL_WORDS: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral", "calm", "indifferent", "emotionless", "expressionless"),
    "angry": (
        "angry",
        "anger",
        "angrily",
        "furious",
        "fury",
        "rage",
        "mad",
        "irritated",
        "annoyed",
        "annoyance",
        "frustrated",
        "frustration",
        "hostile",
        "indignant",
    ),
    "happy": (
        "happy",
        "happiness",
        "happily",
        "joy",
        "joyful",
        "joyous",
        "glad",
        "delighted",
        "cheerful",
        "pleased",
        "excited",
        "content",
        "elated",
    ),
    "sad": (
        "sad",
        "sadness",
        "sadly",
        "unhappy",
        "sorrow",
        "sorrowful",
        "depressed",
        "grief",
        "grieving",
        "melancholy",
        "upset",
        "heartbroken",
        "disappointed",
        "disappointment",
    ),
    "worried": (
        "worried",
        "worry",
        "worrying",
        "anxious",
        "anxiety",
        "nervous",
        "concerned",
        "concern",
        "uneasy",
        "apprehensive",
        "tense",
    ),
    "surprise": (
        "surprise",
        "surprised",
        "surprising",
        "astonished",
        "astonishment",
        "amazed",
        "amazement",
        "shocked",
        "shock",
        "startled",
    ),
    "fear": ("fear", "fearful", "afraid", "scared", "frightened", "terrified", "terror", "panic"),
    "contempt": ("contempt", "contemptuous", "disdain", "disdainful", "scorn", "scornful", "sneering"),
    "doubt": (
        "doubt",
        "doubtful",
        "skeptical",
        "sceptical",
        "suspicious",
        "uncertain",
        "confused",
        "puzzled",
        "disbelief",
    ),
    "disgust": ("disgust", "disgusted", "disgusting", "revulsion", "repulsed"),
}
#: Words that negate a label mentioned in the three words after them.
NEGATIONS = frozenset(
    {
        "not",
        "no",
        "never",
        "neither",
        "nor",
        "without",
        "hardly",
        "isn't",
        "wasn't",
        "aren't",
        "doesn't",
        "don't",
        "didn't",
        "nt",
        "barely",
    }
)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def parse_label_robust(text: str, labels: tuple[str, ...] = MER_LABELS) -> str | None:
    """Label words and their synonyms anywhere in the answer, any case; a mention preceded by a
    negation within three words (``not sad``, ``is not really angry``) is skipped, and ``but``
    ends a negation's reach. The last remaining mention wins (reasoning texts conclude at the
    end). ``None`` when no label is named."""
    lookup = {w: label for label in labels for w in LABEL_WORDS.get(label, (label,))}
    tokens = _WORD.findall(clean_generation(text).lower())
    found: str | None = None
    for i, tok in enumerate(tokens):
        label = lookup.get(tok)
        if label is None:
            continue
        window = tokens[max(0, i - 3) : i]
        if "but" in window:
            window = window[len(window) - window[::-1].index("but") :]
        if any(w in NEGATIONS or w.endswith("n't") for w in window):
            continue
        found = label
    return found
