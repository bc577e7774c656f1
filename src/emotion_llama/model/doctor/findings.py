"""What ``doctor`` reports: one finding per check, at a level."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Level = Literal["ok", "note", "warn", "problem"]

#: The subtitle of the sanity prompt (the one ``smoke`` uses).
SANITY_SUBTITLE = "I can't believe you did that!"
#: The chat LLM every released Emotion-LLaMA file was trained on (SPEC 2.3).
PAPER_LLM = "meta-llama/Llama-2-7b-chat-hf"


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
