"""Missing modalities (emotion_llama.modalities): an absent part gets no positions in the prompt,
the model writes only the kept vectors, and the result equals the LLM run by hand on the full
prompt's embeddings with those positions taken out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.modalities import (
    FEATURE_PARTS,
    MODALITIES,
    absent_parts,
    feature_keep,
    fed,
    parse_modalities,
)
from helpers import random_media


def test_parse_and_the_parts_of_each_modality() -> None:
    assert parse_modalities(None) == parse_modalities("all") == MODALITIES
    assert parse_modalities("text, Audio") == ("audio", "text")
    assert parse_modalities(["video"]) == ("video",)
    for bad, message in (
        ("smell", "unknown modality 'smell'"),
        ("", "no modality chosen"),
        (",", "no modality"),
    ):
        with pytest.raises(EmotionLlamaError, match=message):
            parse_modalities(bad)
    assert absent_parts(("video", "text")) == {"audio"}
    assert absent_parts(("audio",)) == {"frame", "face", "motion"}
    assert absent_parts(MODALITIES, missing=["face"]) == {"face"}
    with pytest.raises(EmotionLlamaError, match="unknown feature part"):
        absent_parts(MODALITIES, missing=["nose"])
    assert set(FEATURE_PARTS) == absent_parts(("text",))


def test_feature_keep_follows_the_model_order() -> None:
    # [G EVA groups, local, temporal, audio, EVA CLS]
    assert feature_keep(3) == [True] * 7
    assert feature_keep(3, {"audio"}) == [True, True, True, True, True, False, True]
    assert feature_keep(3, {"frame"}) == [False, False, False, True, True, True, False]
    assert feature_keep(2, {"face", "motion"}) == [True, True, False, False, True, True]


def test_fed_says_what_the_model_was_given() -> None:
    assert fed(MODALITIES) == {"video": "frame, face, motion", "audio": "audio", "text": "subtitle"}
    assert fed(("audio",)) == {
        "video": "not fed (not chosen)",
        "audio": "audio",
        "text": "not fed (not chosen)",
    }
    assert fed(MODALITIES, {"face"})["video"] == "frame, motion (no face in the clip)"
    assert fed(("video", "text"), {"audio"})["audio"] == "not fed (not chosen)"


@pytest.mark.parametrize("layout", ["inference", "training"])
def test_absent_parts_have_no_positions(processor, tiny_config, layout: str) -> None:
    f = tiny_config.num_multimodal_tokens
    full = processor.encode("hello", "emotion", "which emotion?", layout=layout)
    no_audio = processor.encode("hello", "emotion", "which emotion?", layout=layout, absent={"audio"})
    audio_only = processor.encode(
        "hello", "emotion", "which emotion?", layout=layout, absent={"frame", "face", "motion"}
    )
    assert sum(full.feature_mask) == f and "feature_keep" not in full.extras
    assert sum(no_audio.feature_mask) == f - 1 and len(no_audio.input_ids) == len(full.input_ids) - 1
    assert sum(audio_only.feature_mask) == 1
    assert no_audio.extras["feature_keep"] == feature_keep(tiny_config.vision.num_groups, {"audio"})
    # the text around the features is the same prompt
    text = [i for i, m in zip(full.input_ids, full.feature_mask, strict=True) if not m]
    assert text == [i for i, m in zip(audio_only.input_ids, audio_only.feature_mask, strict=True) if not m]
    batch = processor.collate([full, no_audio], padding_side="left")
    assert batch["feature_keep"].tolist() == [[True] * f, no_audio.extras["feature_keep"]]
    assert "feature_keep" not in processor.collate([full, full], padding_side="left")


def _by_hand(model, processor, config, absent: set[str]) -> torch.Tensor:
    """The last position's logits of the LLM on the full prompt's embeddings with the absent
    parts' positions removed: the reference the model's own path must match."""
    from emotion_llama.model.modeling import position_ids_from_mask

    sample = processor.encode("I am so glad", "emotion", "which emotion?")
    media = random_media(config, 1, seed=5)
    inputs = processor.batch([sample], [{k: v[0] for k, v in media.items()}], padding_side="left")
    embeds, _ = model.embed_inputs(inputs)
    keep_vectors = feature_keep(config.vision.num_groups, absent)
    feature_positions = [i for i, m in enumerate(sample.feature_mask) if m]
    drop = {p for p, keep in zip(feature_positions, keep_vectors, strict=True) if not keep}
    rows = [i for i in range(embeds.shape[1]) if i not in drop]
    kept = embeds[:, rows]
    mask = torch.ones(1, len(rows), dtype=torch.long)
    out = model.llm(inputs_embeds=kept, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    return out.logits[0, -1]


@pytest.mark.parametrize("absent", [{"audio"}, {"frame", "face", "motion"}, {"face"}])
def test_the_model_matches_the_prompt_without_those_positions(
    tiny_model, processor, tiny_config, absent
) -> None:
    want = _by_hand(tiny_model, processor, tiny_config, absent)
    sample = processor.encode("I am so glad", "emotion", "which emotion?", absent=absent)
    media = random_media(tiny_config, 1, seed=5)
    inputs = processor.batch([sample], [{k: v[0] for k, v in media.items()}], padding_side="left")
    assert inputs.feature_keep is not None
    with torch.no_grad():
        got = tiny_model(**inputs.as_kwargs()).logits[0, -1]
        full = processor.encode("I am so glad", "emotion", "which emotion?")
        every = processor.batch([full], [{k: v[0] for k, v in media.items()}], padding_side="left")
        all_in = tiny_model(**every.as_kwargs()).logits[0, -1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, all_in, atol=1e-4)  # the absent part changed the answer


def test_a_mixed_batch_equals_each_clip_alone(tiny_model, processor, tiny_config) -> None:
    from emotion_llama.encoders.store import ClipFeatures
    from emotion_llama.model.generation import ClipInput, build_inputs

    media = random_media(tiny_config, 3, seed=2)
    frames = [(torch.rand(24, 32, 3) * 255).to(torch.uint8).numpy() for _ in range(3)]
    clips = [
        ClipInput(
            s,
            frames[i],
            ClipFeatures(
                media["local_feats"][i].numpy(),
                media["temporal_feats"][i].numpy(),
                media["audio_feats"][i].numpy(),
            ),
            absent=frozenset(a),
        )
        for i, (s, a) in enumerate([("hi", ()), ("", {"audio"}), ("so sad", {"frame", "face", "motion"})])
    ]
    with torch.no_grad():
        together = tiny_model(**build_inputs(processor, clips).as_kwargs()).logits[:, -1]
        alone = torch.cat(
            [tiny_model(**build_inputs(processor, [c]).as_kwargs()).logits[:, -1] for c in clips]
        )
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_a_keep_that_does_not_fit_the_prompt_is_refused(tiny_model, processor, tiny_config) -> None:
    from emotion_llama.errors import FeatureCountError

    sample = processor.encode("x", "emotion", "y", absent={"audio"})
    media = random_media(tiny_config, 1)
    inputs = processor.batch([sample], [{k: v[0] for k, v in media.items()}], padding_side="left")
    import dataclasses

    wrong = dataclasses.replace(inputs, feature_keep=torch.ones_like(inputs.feature_keep))
    with pytest.raises(FeatureCountError, match="feature positions per sample"):
        tiny_model(**wrong.as_kwargs())


def test_modality_dropout_drops_one_modality_of_some_items(tiny_config, processor, tmp_path) -> None:
    from emotion_llama.data.formats.folder import read_training_folder
    from emotion_llama.data.synth import make_synthetic_dataset
    from emotion_llama.train.config import TrainConfig, TrainError
    from emotion_llama.train.data import TrainDataset

    make_synthetic_dataset(tmp_path, n=16, config=tiny_config, seed=0, layout="native")
    samples = read_training_folder(tmp_path, tiny_config, tasks=("emotion",))
    ds = TrainDataset(samples, processor, seed=0)
    f = tiny_config.num_multimodal_tokens
    plain = [ds[i]["encoded"] for i in range(len(ds.clips))]
    assert all(sum(e.feature_mask) == f and "feature_keep" not in e.extras for e in plain)
    ds.modality_dropout = 0.6
    dropped = [ds[i]["encoded"] for i in range(len(ds.clips))]
    kinds = set()
    for before, after in zip(plain, dropped, strict=True):
        if "feature_keep" in after.extras:
            kinds.add("audio" if sum(after.feature_mask) == f - 1 else "video")
        elif after.input_ids != before.input_ids:
            kinds.add("text")  # the subtitle emptied
    assert len(kinds) >= 2, kinds
    assert sum(d.input_ids != p.input_ids for d, p in zip(dropped, plain, strict=True)) < len(plain)
    batch = ds.collate([ds[i] for i in range(4)])
    assert batch.feature_keep is None or batch.feature_keep.shape == (4, f)
    with pytest.raises(TrainError, match="modality_dropout"):
        TrainConfig(modality_dropout=1.0).validate()


# -- the predictor on a real clip ------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(speaking_clip: Path) -> Path:
    return speaking_clip


@pytest.mark.slow
def test_audio_only_and_video_only_answers_through_the_full_tiny_model(clip, tmp_path, tiny_config) -> None:
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained
    from emotion_llama.serve.predictor import Predictor

    torch.manual_seed(0)
    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    with Predictor(model_dir=ckpt, label_mode="score") as p:
        every = p.analyze(clip)
        audio = p.analyze(clip, modalities="audio")
        video = p.analyze(clip, modalities="video")
    assert every.record["inputs"] == {
        "modalities": ["video", "audio", "text"],
        "fed": {"video": "frame, face, motion", "audio": "audio", "text": "subtitle"},
    }
    assert audio.record["inputs"]["fed"] == {
        "video": "not fed (not chosen)",
        "audio": "audio",
        "text": "not fed (not chosen)",
    }
    assert video.record["inputs"]["fed"]["video"] == "frame, face, motion"
    assert video.record["inputs"]["fed"]["audio"] == "not fed (not chosen)"
    assert "video: not used (--modalities audio)" in audio.record["missing"]
    assert audio.record["subtitle"] == "" and audio.record["peak_AU_list"] == []
    for one in (audio, video):
        assert one.scores is not None and every.scores is not None
        assert (
            max(abs(one.scores[k] - every.scores[k]) for k in every.scores) > 1e-4
        )  # other inputs, other answer


@pytest.mark.slow
def test_the_clue_pipeline_uses_only_the_chosen_modalities(clip) -> None:
    from emotion_llama.serve.predictor import Predictor

    with Predictor(preset="tiny", modalities="audio,text") as p:
        a = p.analyze_many([clip], subtitles=["We finally won the cup!"])[0]
    assert not isinstance(a, Exception)
    rec = a.record
    assert (
        rec["modalities"]["face"] is None and rec["peak_AU_list"] == [] and rec["visual_expression"] is None
    )
    assert rec["modalities"]["words"] is not None and rec["label_source"] != "face"
    assert rec["inputs"]["modalities"] == ["audio", "text"]
    assert "video: not used (--modalities audio, text)" in rec["missing"]
    assert a.timeline.intensity.shape[0] == 0  # no AU timeline without the video


def test_evaluate_answers_from_the_chosen_modalities(tiny_config, tmp_path) -> None:
    from emotion_llama.data.synth import make_synthetic_dataset
    from emotion_llama.evaluate.runner import (
        get_benchmark,
        model_predict_fn,
        read_predictions,
        run_predictions,
    )
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained

    make_synthetic_dataset(tmp_path / "bench", n=6, config=tiny_config, seed=0, layout="native")
    torch.manual_seed(1)
    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    bench = get_benchmark("mer2023")
    outputs = {}
    for mods in (None, ["audio"]):
        predict = model_predict_fn(ckpt, bench, label_mode="score", modalities=mods)
        out = tmp_path / f"eval_{mods}"
        summary = run_predictions(bench, tmp_path / "bench", out, predict, progress=False)
        assert summary.predicted == 6 and not summary.skipped
        outputs[str(mods)] = predict.model_name  # type: ignore[attr-defined]
        assert len(read_predictions(out / "predictions.jsonl")) == 6
    assert outputs["['audio']"].endswith("(modalities audio)") and "modalities" not in outputs["None"]
    with pytest.raises(EmotionLlamaError, match="unknown modality"):
        model_predict_fn(ckpt, bench, modalities=["smell"])
