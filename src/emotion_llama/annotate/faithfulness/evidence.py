"""What a clip supports (:class:`Evidence`, read from a clue record by :func:`evidence_from_record`)
and the verdict of the check (:class:`Faithfulness`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The start of every problem that is a contradiction of the clues (rule 3).
CONTRADICTS = "contradicts the clue: "


@dataclass(frozen=True)
class Evidence:
    """What the clip supports."""

    #: FACS phrases detected, e.g. ("lip corner puller", "cheek raiser"); may also hold the eye
    #: phrases "eyes closed" and "frequent blinking".
    au_phrases: tuple[str, ...] = ()
    #: :func:`~emotion_llama.perception.prosody.describe_tone` words, e.g. ("high-pitched", "very loud").
    tone_words: tuple[str, ...] = ()
    #: What the person says (transcript).
    subtitle: str = ""
    #: The record's label.
    label: str | None = None
    #: A vision-language model's description of the frame, when any.
    visual_objective: str | None = None
    has_face: bool = True
    #: Voiced speech was measured.
    has_voice: bool = True


@dataclass(frozen=True)
class Faithfulness:
    """The verdict of :func:`check_reasoning`: ``ok`` when there is no problem."""

    ok: bool
    #: One short human-readable sentence per problem, in text order, without repeats.
    problems: tuple[str, ...]

    @property
    def contradicts(self) -> bool:
        """Whether a problem is a contradiction of the clues (rule 3), the worst kind."""
        return any(p.startswith(CONTRADICTS) for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": list(self.problems), "contradicts": self.contradicts}


def _strings(value: Any) -> tuple[str, ...]:
    """A list of strings (or one comma-separated string) as stripped, non-empty strings."""
    if value is None:
        return ()
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        return ()
    return tuple(s for v in items if v is not None and (s := str(v).strip()))


def evidence_from_record(record: Mapping[str, Any]) -> Evidence:
    """The :class:`Evidence` of a clue record (see :func:`~emotion_llama.annotate.pipeline.clue_record`).

    Keys read (absent or ``None`` ones are empty): ``visual_prior_list`` (the AU phrases),
    ``audio_prior_list`` (the tone words), ``subtitle``, ``label``, ``visual_objective`` and
    ``missing``: an entry whose kind (before the first ``:``) is ``face`` means no face, one of
    kind ``speech`` or ``audio`` means no voice."""
    kinds = {str(m).split(":", 1)[0].strip().lower() for m in _strings(record.get("missing"))}
    subtitle = record.get("subtitle")
    label = record.get("label")
    objective = record.get("visual_objective")
    return Evidence(
        au_phrases=_strings(record.get("visual_prior_list")),
        tone_words=_strings(record.get("audio_prior_list")),
        subtitle=str(subtitle).strip() if subtitle is not None else "",
        label=str(label).strip() or None if label is not None else None,
        visual_objective=str(objective).strip() or None if objective is not None else None,
        has_face="face" not in kinds,
        has_voice=not kinds & {"speech", "audio"},
    )
