"""MERR clues from facial action units and the coarse caption (SPEC 6, steps 3, 4 and 8). No torch.

The pieces are pure functions of already extracted data (AU intensities, the descriptions written
by other models, the transcript), so the pipeline can rerun any step on stored records.

Record keys read by :func:`clue_text` (all optional, absent or empty ones are left out):

- ``visual_expression``: the peak frame's AU phrases, a string or a list of phrases;
- ``visual_objective``: the vision-language model's description of the peak frame;
- ``audio_tone``: the audio LLM's description of the voice;
- ``subtitle``: what the person says;
- ``candidate_labels``: the output of :func:`candidate_labels` (``(label, share)`` pairs; JSON
  turns the tuples into two-element lists, which are accepted too), ``{"label", "share"}`` dicts
  or plain label names (see :func:`candidate_pair`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.perception.action_units import ACTIVE_THRESHOLD, EVENT_AUS, AUTimeline

#: AU combinations per label (SPEC 6 step 4, the same group's later tooling). ``disgust`` is kept
#: although MERR dropped the label, so a pipeline can see (and drop) such clips itself.
#: ``neutral`` and ``doubt`` have no rule: no AU pattern speaks for them.
AU_LABEL_RULES: dict[str, tuple[str, ...]] = {
    "happy": ("AU06", "AU12", "AU14"),
    "sad": ("AU01", "AU04", "AU15", "AU14"),
    "surprise": ("AU01", "AU02", "AU05", "AU26"),
    "fear": ("AU01", "AU02", "AU04", "AU05", "AU07", "AU20", "AU26"),
    "angry": ("AU04", "AU05", "AU07", "AU23", "AU10", "AU17"),
    "contempt": ("AU12", "AU10", "AU14", "AU17"),
    "worried": ("AU28", "AU20"),
    "disgust": ("AU09", "AU15"),
}

#: AUs whose presence rules a label out, whatever else the face shows: a smile with lowered brows is
#: not an enjoyment smile (Ekman, Davidson & Friesen 1990), and MediaPipe's smile score also fires on
#: the sideways lip stretch of a crying face, whose brows are lowered.
AU_LABEL_EXCLUSIONS: dict[str, tuple[str, ...]] = {"happy": ("AU04",)}

#: The cry face (:func:`~emotion_llama.perception.action_units.cry_episodes`) reads ``sad`` with
#: share 1.0 in its frames; ``happy`` is not a candidate there.

#: SPEC 6 step 4: an AU counts as present at this intensity (OpenFace 0..5 scale).
LABEL_AU_THRESHOLD = 0.8
#: SPEC 6 step 4: a label needs at least this share of its AUs present.
LABEL_MIN_SHARE = 0.5


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def candidate_labels(
    intensities: Mapping[str, float],
    threshold: float = LABEL_AU_THRESHOLD,
    min_share: float = LABEL_MIN_SHARE,
    *,
    cry: bool = False,
) -> list[tuple[str, float]]:
    """The labels the AUs of one frame speak for, as ``(label, share)``, strongest first.

    Rule (SPEC 6 step 4): an AU is *present* when its intensity is ``>= threshold`` (0.8 on the
    OpenFace 0..5 scale); a label's *share* is the fraction of its :data:`AU_LABEL_RULES` AUs that
    are present; a label is a candidate when ``share >= min_share`` (0.5). Candidates are sorted by
    share, then by the mean intensity of the label's AUs (an AU missing from ``intensities`` or
    without a finite value counts as 0 there), both descending, then by the rules' order so that
    the result is deterministic.

    AUs a source only detects (OpenFace has AU28 as presence ``AU28_c`` without an intensity) must
    be passed with an intensity at or above ``threshold`` when present, or they never count.

    A label is left out when an AU of :data:`AU_LABEL_EXCLUSIONS` is present (``happy`` with the
    brows lowered). ``cry``: the frame lies in a cry-face episode (see
    :func:`~emotion_llama.perception.action_units.cry_episodes`):
    ``sad`` leads with share 1.0 and ``happy`` is left out.
    """
    if not math.isfinite(threshold):
        raise EmotionLlamaError(f"candidate_labels: threshold {threshold} must be a finite number")
    if not 0.0 < min_share <= 1.0:
        raise EmotionLlamaError(f"candidate_labels: min_share {min_share} must be in (0, 1]")
    values = {au: v for au, raw in intensities.items() if (v := _finite(raw)) is not None}
    present = {au for au, v in values.items() if v >= threshold}
    scored: list[tuple[float, float, int, str]] = []
    for order, (label, aus) in enumerate(AU_LABEL_RULES.items()):
        if any(au in present for au in AU_LABEL_EXCLUSIONS.get(label, ())):
            continue
        if cry and label in ("happy", "sad"):
            continue
        share = sum(au in present for au in aus) / len(aus)
        if share >= min_share:
            mean = sum(values.get(au, 0.0) for au in aus) / len(aus)
            scored.append((-share, -mean, order, label))
    scored.sort()
    out = [(label, -neg_share) for neg_share, _, _, label in scored]
    return [("sad", 1.0), *out] if cry else out


def in_episodes(t: float, episodes: Sequence[tuple[float, float]]) -> bool:
    return any(a - 1e-6 <= t < b - 1e-6 for a, b in episodes)


@dataclass(frozen=True)
class FaceVote:
    """What the face says over the whole clip."""

    label: str | None
    #: Sum of the winning label's share over the frames it leads, over the frames with a face (0..1).
    confidence: float
    #: Share of the face frames each label leads (labels that never lead left out).
    frames: dict[str, float]
    #: The expression phrases behind the vote (the peak frame's, or the cry face's).
    evidence: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 3),
            "frames": {k: round(v, 3) for k, v in self.frames.items()},
            "evidence": list(self.evidence),
        }


#: The face votes ``neutral`` when at least this share of its frames shows no AU pattern at all.
NEUTRAL_FACE_SHARE = 0.8
#: Confidence of a neutral face vote (an absence of evidence is weak evidence).
NEUTRAL_FACE_CONFIDENCE = 0.3


def face_vote(
    tl: AUTimeline,
    labels: Sequence[str],
    threshold: float = LABEL_AU_THRESHOLD,
    min_share: float = LABEL_MIN_SHARE,
) -> FaceVote | None:
    """The face's label over the clip, by a vote of its frames; ``None`` without a face.

    Each frame with a face votes for its first :func:`candidate_labels` entry that is in
    ``labels`` (cry-face frames: ``sad``), weighted by that candidate's share; the clip's label is
    the one with the largest total, its confidence that total over the number of face frames.
    Frames without a candidate abstain; when they are at least :data:`NEUTRAL_FACE_SHARE` of the
    frames the face votes ``neutral`` (if in ``labels``) with :data:`NEUTRAL_FACE_CONFIDENCE`."""
    from emotion_llama.perception.action_units import cry_episodes

    face = tl.face_found.astype(bool)
    n = int(face.sum())
    if n == 0:
        return None
    episodes = cry_episodes(tl, threshold)
    totals: dict[str, float] = {}
    leads: dict[str, int] = {}
    silent = 0
    for i in np.flatnonzero(face):
        row = {a: float(v) for a, v in zip(tl.names, tl.intensity[i], strict=True) if np.isfinite(v)}
        cands = candidate_labels(row, threshold, min_share, cry=in_episodes(float(tl.times[i]), episodes))
        pick = next(((lab, sh) for lab, sh in cands if lab in labels), None)
        if pick is None:
            silent += 1
            continue
        totals[pick[0]] = totals.get(pick[0], 0.0) + pick[1]
        leads[pick[0]] = leads.get(pick[0], 0) + 1
    shares = {k: v / n for k, v in sorted(leads.items(), key=lambda kv: -kv[1])}
    if silent / n >= NEUTRAL_FACE_SHARE - 1e-9 or not totals:
        if "neutral" in labels:
            return FaceVote("neutral", NEUTRAL_FACE_CONFIDENCE, shares, ["no expression pattern"])
        return FaceVote(None, 0.0, shares, [])
    order = [lab for lab in AU_LABEL_RULES if lab in totals]
    best = max(order, key=lambda lab: (totals[lab], -order.index(lab)))
    evidence = ["brow lowerer", "eyes closed"] if best == "sad" and episodes else []
    return FaceVote(best, totals[best] / n, shares, evidence)


def frequent_aus(tl: AUTimeline, top_k: int = 5, threshold: float = ACTIVE_THRESHOLD) -> list[str]:
    """The clip's ``top_k`` most frequently active AUs (MERR's ``AU_list``), most frequent first;
    blinks (event AUs) are not expressions and are left out.

    Active: intensity ``>= threshold`` in a frame with a face. A column without any intensity in
    the face frames (OpenFace's presence-only AU28) uses the timeline's presence flags instead, so
    such an AU is not silently lost; columns that have intensities ignore presence, so that
    ``threshold`` means the same thing for every source. Ties go to the higher mean intensity,
    then to the timeline's column order. AUs never active are left out, so the list can be shorter
    than ``top_k`` (empty when no frame has a face).
    """
    if top_k < 1:
        raise EmotionLlamaError(f"frequent_aus: top_k {top_k} must be at least 1")
    face = tl.face_found.astype(bool)
    if not face.any():
        return []
    values = tl.intensity[face].astype(np.float64)
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        active = finite & (values >= threshold)
    if tl.presence is not None:
        presence_only = ~finite.any(axis=0)
        active[:, presence_only] = tl.presence[face][:, presence_only]
    counts = active.sum(axis=0)
    means = np.where(finite, values, 0.0).mean(axis=0)
    order = sorted(range(len(tl.names)), key=lambda k: (-int(counts[k]), -float(means[k]), k))
    return [tl.names[k] for k in order if counts[k] > 0 and tl.names[k] not in EVENT_AUS][:top_k]


# -- coarse caption ---------------------------------------------------------------------------------
def _part(text: str | None, trim_period: bool, stops: tuple[str, ...] = (".",)) -> str | None:
    """A caption part without surrounding space; ``None`` for absent or blank parts.

    The template supplies its own punctuation after the first three parts, so one trailing full
    stop of a model's description is dropped there (otherwise "... is smiling.. The person's");
    the subtitle ends the caption and is kept verbatim apart from surrounding space."""
    if text is None:
        return None
    text = text.strip()
    if trim_period and text.endswith(stops) and not text.endswith(".."):
        text = text[:-1].rstrip()
    return text or None


@dataclass(frozen=True)
class CaptionText:
    """The sentences of the coarse caption in one language (``{}`` is the part): the objective
    description, expression and tone together, the expression alone, the tone alone, the
    subtitle; how sentences are joined; the full stops a part loses at its end."""

    objective: str
    both: str
    expression: str
    tone: str
    said: str
    joiner: str = " "
    stops: tuple[str, ...] = (".",)


#: SPEC 6 step 8, word for word.
CAPTION_EN = CaptionText(
    objective="This person in the video is {vo}.",
    both="The person's expression and actions include {ve}, and the person's tone is {at}.",
    expression="The person's expression and actions include {ve}.",
    tone="The person's tone is {at}.",
    said="Saying: {st}",
)


def coarse_caption(
    visual_objective: str | None,
    visual_expression: str | None,
    audio_tone: str | None,
    subtitle: str | None,
    text: CaptionText = CAPTION_EN,
) -> str:
    """The MERR coarse caption (SPEC 6 step 8).

    With every part present it is exactly::

        This person in the video is {vo}. The person's expression and actions include {ve}, and the
        person's tone is {at}. Saying: {st}

    A part that is ``None`` or blank loses its clause; nothing is made up in its place. The caption
    is the sentences below that apply, joined by one space, in this order:

    1. ``This person in the video is {vo}.`` when the visual objective is present;
    2. ``The person's expression and actions include {ve}, and the person's tone is {at}.`` when
       both are present; ``The person's expression and actions include {ve}.`` with the
       expression only; ``The person's tone is {at}.`` with the tone only; nothing with neither;
    3. ``Saying: {st}`` when the subtitle is present.

    Parts are stripped of surrounding space; the first three also lose one trailing ``.`` (the
    template adds its own). With no part at all the caption is ``""`` (a clip without face, voice
    or words is left out of the coarse set by the caller, not an error in a batch run).
    """
    vo = _part(visual_objective, trim_period=True, stops=text.stops)
    ve = _part(visual_expression, trim_period=True, stops=text.stops)
    at = _part(audio_tone, trim_period=True, stops=text.stops)
    st = _part(subtitle, trim_period=False)
    sentences: list[str] = []
    if vo is not None:
        sentences.append(text.objective.format(vo=vo))
    if ve is not None and at is not None:
        sentences.append(text.both.format(ve=ve, at=at))
    elif ve is not None:
        sentences.append(text.expression.format(ve=ve))
    elif at is not None:
        sentences.append(text.tone.format(at=at))
    if st is not None:
        sentences.append(text.said.format(st=st))
    return text.joiner.join(sentences)


# -- clues for the LLM ------------------------------------------------------------------------------
def _text_field(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, Sequence):
        # the AU phrases are stored as a list; the LLM reads them as one comma-separated clause
        text = ", ".join(str(v).strip() for v in value if str(v).strip())
    else:
        raise EmotionLlamaError(f"clue record: {key!r} must be a string or a list of strings, got {value!r}")
    return text or None


def _candidates_field(record: Mapping[str, Any]) -> list[str]:
    value = record.get("candidate_labels")
    if not value:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise EmotionLlamaError(
            f"clue record: 'candidate_labels' must be a list of (label, share) pairs or labels, got {value!r}"
        )
    out: list[str] = []
    for item in value:
        label, share = candidate_pair(item)
        out.append(label if share is None else f"{label} ({round(100 * share)}% of its AUs)")
    return out


def candidate_pair(item: Any) -> tuple[str, float | None]:
    """One stored candidate as ``(label, share)``: a ``(label, share)`` pair (a JSON list too), a
    ``{"label", "share"}`` dict, or a bare label name (share ``None``)."""
    if isinstance(item, str):
        return item, None
    if isinstance(item, Mapping):
        label, raw = item.get("label"), item.get("share")
    elif isinstance(item, Sequence) and len(item) == 2:
        label, raw = item[0], item[1]
    else:
        raise EmotionLlamaError(f"candidate label {item!r}: expected a label, (label, share) or a dict")
    share = _finite(raw)
    if not isinstance(label, str) or not label or share is None:
        raise EmotionLlamaError(f"candidate label {item!r}: needs a label name and a numeric share")
    return label, share


def clue_text(record: Mapping[str, Any]) -> str:
    """The clues of one clip as a list for the LLM, one ``- Title: value`` line each, in this order
    (absent ones left out)::

        - Visual expression: {visual_expression}
        - Visual objective: {visual_objective}
        - Audio tone: {audio_tone}
        - Subtitle: {subtitle}
        - Candidate labels from facial action units: {label} ({share}% of its AUs), ...
        - Conflict: {conflict_reason}

    See the module docstring for the keys (``conflict_reason``: the fusion's, when the modalities
    disagree). ``""`` when no clue is present at all (the reasoning functions then ask the LLM
    nothing for that clip)."""
    lines: list[str] = []
    for key, title in (
        ("visual_expression", "Visual expression"),
        ("visual_objective", "Visual objective"),
        ("audio_tone", "Audio tone"),
        ("subtitle", "Subtitle"),
    ):
        text = _text_field(record, key)
        if text is not None:
            lines.append(f"- {title}: {text}")
    candidates = _candidates_field(record)
    if candidates:
        lines.append(f"- Candidate labels from facial action units: {', '.join(candidates)}")
    if lines and record.get("conflict") and record.get("conflict_reason"):
        lines.append(f"- Conflict: {record['conflict_reason']}")
    return "\n".join(lines)
