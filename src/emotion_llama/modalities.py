"""Which modalities a clip is answered from, and what that means for the model's inputs.

A user chooses among three modalities (``--modalities``): ``video`` (the frame, the face and the
motion), ``audio`` (the voice) and ``text`` (the subtitle). The model reads them as four feature
parts (SPEC 2.1, in its order [G EVA groups, local, temporal, audio, EVA CLS]):

- ``frame``: the global encoder's G groups and its CLS token (the video modality);
- ``face``: the local (MAE) feature of the face crops (video);
- ``motion``: the temporal (VideoMAE) feature (video);
- ``audio``: the audio (HuBERT) feature (audio).

An absent part is not fed at all: its positions are left out of the prompt (the model never
sees a zero vector standing in for it), and an absent text is an empty subtitle. A clip that has
no face or no audio track is answered the same way, with that part absent, and the record says so.
Pure functions; no model here.
"""

from __future__ import annotations

from collections.abc import Iterable

from emotion_llama.errors import EmotionLlamaError

#: What a user may choose, in this order.
MODALITIES: tuple[str, ...] = ("video", "audio", "text")
#: The model's feature parts.
FEATURE_PARTS: tuple[str, ...] = ("frame", "face", "motion", "audio")
#: The parts of each modality (``text`` has none: it is the subtitle).
PARTS_OF: dict[str, tuple[str, ...]] = {"video": ("frame", "face", "motion"), "audio": ("audio",), "text": ()}


def parse_modalities(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"all"`` / ``None`` (every modality), ``"video,audio"``, ``["audio"]``... -> the chosen
    modalities in :data:`MODALITIES` order. Unknown names and an empty choice are refused."""
    if spec is None:
        return MODALITIES
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [s for s in items if s]
    if items == ["all"]:
        return MODALITIES
    unknown = [s for s in items if s not in MODALITIES]
    if unknown:
        raise EmotionLlamaError(
            f"unknown modality {', '.join(map(repr, unknown))}; choose from {', '.join(MODALITIES)} or all"
        )
    if not items:
        raise EmotionLlamaError(f"no modality chosen; choose from {', '.join(MODALITIES)} or all")
    return tuple(m for m in MODALITIES if m in items)


def absent_parts(modalities: Iterable[str], missing: Iterable[str] = ()) -> frozenset[str]:
    """The feature parts not fed: those of the modalities not chosen, and the ``missing`` parts
    of the clip itself (``face`` when no face was found, ``audio`` without an audio track)."""
    chosen = set(modalities)
    out = {p for m in MODALITIES if m not in chosen for p in PARTS_OF[m]}
    unknown = set(missing) - set(FEATURE_PARTS)
    if unknown:
        raise EmotionLlamaError(
            f"unknown feature part(s) {sorted(unknown)}; they are {', '.join(FEATURE_PARTS)}"
        )
    return frozenset(out | set(missing))


def feature_keep(num_groups: int, absent: Iterable[str] = ()) -> list[bool]:
    """For each of the model's ``num_groups + 4`` feature vectors, whether it is fed."""
    gone = set(absent)
    unknown = gone - set(FEATURE_PARTS)
    if unknown:
        raise EmotionLlamaError(
            f"unknown feature part(s) {sorted(unknown)}; they are {', '.join(FEATURE_PARTS)}"
        )
    frame = "frame" not in gone
    return [frame] * num_groups + ["face" not in gone, "motion" not in gone, "audio" not in gone, frame]


def fed(modalities: Iterable[str], absent: Iterable[str] = ()) -> dict[str, str]:
    """What the model was given for each modality, in words, for records and answers:
    ``{"video": "frame, face, motion", "audio": "not fed (not chosen)", "text": "subtitle"}``."""
    chosen = set(modalities)
    gone = set(absent)
    out: dict[str, str] = {}
    for m in MODALITIES:
        if m not in chosen:
            out[m] = "not fed (not chosen)"
        elif m == "text":
            out[m] = "subtitle"
        else:
            parts = [p for p in PARTS_OF[m] if p not in gone]
            lost = [p for p in PARTS_OF[m] if p in gone]
            text = ", ".join(parts) if parts else "not fed"
            out[m] = text + (f" (no {', '.join(lost)} in the clip)" if lost else "")
    return out
