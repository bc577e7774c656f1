"""The real-clip quality benchmark (emotion_llama.evaluate.quality): real faces from the offline test
media with matched, mismatched and tone-varied speech, through the predictor with the offline LLM.
Slow: it perceives 18 clips and asks the LLM about each. The floors are what the pipeline reaches
on these clips; a regression in any modality, the fusion, the conflict flag, the tone words or the
faithfulness check breaks one of them."""

from __future__ import annotations

import pytest

from emotion_llama.errors import EmotionLlamaError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quality(tmp_path_factory):  # type: ignore[no-untyped-def]
    from emotion_llama.evaluate.quality import QUALITY_LABELS, build_quality_clips, quality_metrics
    from emotion_llama.serve.predictor import Predictor

    try:
        built = build_quality_clips(tmp_path_factory.mktemp("quality"))
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    clips = [c for c, _ in built]
    # 96 tokens: the reasoning's length does not change the floors (labels and conflicts come before
    # the LLM, and a text that fails the check is replaced), and it keeps the test's LLM time down
    with Predictor(llm="offline", label_set=QUALITY_LABELS, max_new_tokens=96) as predictor:
        results = predictor.analyze_many([p for _, p in built], names=[c.name for c in clips])
    records = []
    for r in results:
        assert not isinstance(r, Exception), r
        rec = dict(r.record)
        rec["label"], rec["smp_reason_caption"] = r.label, r.reasoning
        records.append(rec)
    return clips, records, quality_metrics(clips, records)


def test_every_clear_single_emotion_clip_is_right(quality) -> None:  # type: ignore[no-untyped-def]
    _, _, m = quality
    assert m["failed"] == 0
    assert m["label_accuracy"] == 1.0, m["per_clip"]


def test_every_mismatch_is_flagged_and_no_matched_clip_is(quality) -> None:  # type: ignore[no-untyped-def]
    clips, records, m = quality
    assert m["conflict_recall"] == 1.0, m["per_clip"]
    assert m["conflict_false_alarms"].startswith("0/"), m["per_clip"]
    for c, r in zip(clips, records, strict=True):
        if c.mismatched:
            assert r["conflict_reason"] and c.words_label in r["conflict_reason"]


def test_each_modality_votes_for_what_it_shows(quality) -> None:  # type: ignore[no-untyped-def]
    clips, records, m = quality
    assert m["words_agreement"] == 1.0, m["per_clip"]
    # the posed disgust photo reads no AU pattern (MediaPipe sees no nose wrinkle): the face abstains
    # as neutral there; every other face votes its emotion
    assert m["face_agreement"] >= (len(clips) - 1) / len(clips), m["per_clip"]
    for r in records:
        assert set(r["modalities"]) == {"face", "voice", "words"}
        assert r["label_source"] in ("face", "voice", "words", "fusion")


def test_tone_words_follow_the_voice_and_never_contradict_it(quality) -> None:  # type: ignore[no-untyped-def]
    _, _, m = quality
    assert m["tone_contradictions"] == [], m["tone_contradictions"]
    assert m["tone_direction"] == 1.0
    assert m["voice_direction"] == 1.0


def test_the_final_reasoning_never_invents_evidence(quality) -> None:  # type: ignore[no-untyped-def]
    _, records, m = quality
    assert m["faithful_final"] == 1.0
    for r in records:
        assert r["reasoning_source"] in ("llm", "llm-retry", "grounded")
        faith = r["faithfulness"]
        assert faith["ok"] and faith["source"] == r["reasoning_source"]
        if r["reasoning_source"] != "llm":
            assert r["rejected_reasoning"] and faith["first_answer_problems"]
