"""The predictor (load once, predict many) and the streaming LLM backends behind it, on real media
with the offline LLM and a tiny Emotion-LLaMA checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotion_llama.errors import EmotionLlamaError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip(speaking_clip: Path) -> Path:
    return speaking_clip


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from emotion_llama.serve.predictor import Predictor

    # One LLM answer cache for the module: a prompt asked again (the same clip analysed, streamed,
    # batched) is answered from it, so only new prompts cost the offline LLM's time.
    cache = tmp_path_factory.mktemp("llm") / "answers.sqlite"
    with Predictor(preset="tiny", cache=cache) as p:
        yield p


def test_hf_stream_joins_to_the_batch_answer_and_the_cache_replays_it(tmp_path):
    from emotion_llama.backends.llm import CachedChatLLM, ChatParams, HFChatLLM, stream_chat
    from emotion_llama.sources import hf_model_dir

    llm = HFChatLLM(hf_model_dir("smollm2_135m_instruct"))
    conv = [{"role": "user", "content": "Name one colour of the sky."}]
    params = ChatParams(max_tokens=24)
    pieces = list(llm.chat_stream(conv, params))
    assert len(pieces) > 1  # really streamed, not one block
    assert "".join(pieces).strip() == llm.chat_many([conv], params)[0]
    cached = CachedChatLLM(llm, tmp_path / "c.sqlite")
    first = "".join(stream_chat(cached, conv, params))
    again = list(stream_chat(cached, conv, params))
    assert (cached.stats.misses, cached.stats.hits) == (1, 1)
    assert again == [first.strip()]
    # the batch path reads what the stream stored
    assert cached.chat_many([conv], params) == [first.strip()]


def test_clue_predictor_analyze_stream_batch_and_question(predictor, clip, tmp_path):
    from emotion_llama.media.frames import MediaError

    assert predictor.kind == "clues" and predictor.model_id == "emotion-llama-clues"
    events = list(predictor.stream(clip))  # first: the LLM streams (the cache is empty)
    a = predictor.analyze(clip)
    assert a.label == "happy"  # she smiles: AU12 + AU6 name the label before any LLM
    assert "AU12" in a.record["peak_AU_list"]
    assert a.reasoning and a.peak_frame is not None and a.peak_frame.ndim == 3
    d = a.to_dict(with_timeline=True)
    assert d["au_timeline"]["names"] and len(d["au_timeline"]["times"]) == len(d["au_timeline"]["intensity"])

    kinds = [e.kind for e in events]
    # the reasoning comes in one piece, once it has passed the faithfulness check
    assert kinds == ["clues", "delta", "done"]
    assert events[0].data.label == "happy" and events[0].data.reasoning is None
    streamed = "".join(e.data for e in events if e.kind == "delta").strip()
    assert streamed == events[-1].data.reasoning == a.reasoning  # greedy: the same text both ways
    assert a.record["reasoning_source"] in ("llm", "llm-retry", "grounded") and a.record["faithfulness"]["ok"]
    # the clip starts on her teary look-up (brows raised) before the smile: the face may vote
    # surprise there while the words say happy
    assert a.record["label_source"] in ("face", "words", "fusion") and set(a.record["modalities"]) == {
        "face",
        "voice",
        "words",
    }

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[:2000])
    both = predictor.analyze_many([clip, broken, clip])
    assert isinstance(both[1], MediaError) and str(broken) in str(both[1])
    assert [x.label for x in (both[0], both[2])] == ["happy", "happy"]  # type: ignore[union-attr]

    q = predictor.analyze(clip, question="What does she say, and how does it sound?")
    assert q.question and q.reasoning and q.reasoning != a.reasoning
    assert q.label == "happy"
    with pytest.raises(EmotionLlamaError, match="no such file"):
        predictor.analyze(tmp_path / "missing.mp4")


def test_full_model_predictor_labels_by_generation_and_streams(clip, tmp_path, tiny_config):
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained
    from emotion_llama.prompts import LABELS
    from emotion_llama.serve.predictor import Predictor

    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    with Predictor(model_dir=ckpt, label_mode="generate") as p:
        assert p.kind == "model" and p.model_id == "emotion-llama-ckpt"
        a = p.analyze(clip)
        assert a.label is None or a.label in LABELS  # random weights: any answer, parsed or not
        assert "model_answer" in a.record and set(a.timings) == {"perception", "clues", "encoders", "model"}
        assert a.record["label_source"] == "model"
        events = list(p.stream(clip))
        assert events[0].kind == "clues" and events[-1].kind == "done"
        assert events[-1].data.record["model_answer"] == a.record["model_answer"]
    with pytest.raises(EmotionLlamaError, match="label_mode"):
        Predictor(model_dir=ckpt, label_mode="vote")  # type: ignore[arg-type]


def test_a_clip_the_encoders_fail_on_fails_alone_in_its_batch(clip, tmp_path, tiny_config, monkeypatch):
    from emotion_llama.encoders.models import AudioEncoder, EncoderError
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained
    from emotion_llama.serve.predictor import Analysis, Predictor

    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    forward, calls = AudioEncoder.forward, []

    def failing(self, waveforms, attention_mask=None):
        calls.append(waveforms.shape[0])
        if len(calls) == 1:
            raise EncoderError("boom")
        return forward(self, waveforms, attention_mask)

    with Predictor(model_dir=ckpt) as p:
        monkeypatch.setattr(AudioEncoder, "forward", failing)
        first, second = p.analyze_many([clip, clip])
    assert isinstance(first, EmotionLlamaError) and "the encoders failed (EncoderError: boom)" in str(first)
    assert isinstance(second, Analysis) and second.record["label_source"] == "model"
    assert calls == [1, 1]


def test_full_model_predictor_with_vllm_engine_answers_as_the_local_one(clip, tmp_path, tiny_config):
    """serve --engine vllm: the full model's prompts decoded by a server (tests/vllm_reference.py
    reads them as vLLM does) give the local engine's label answer and reasoning."""
    import torch

    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import load_pretrained, save_pretrained
    from emotion_llama.model.tokenizer import load_tokenizer
    from emotion_llama.model.vllm_engine import VllmSpec
    from emotion_llama.serve.predictor import Predictor
    from vllm_reference import Reference, serve

    model = build_model(tiny_config)
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    ckpt = save_pretrained(model, tmp_path / "ckpt")
    loaded = load_pretrained(ckpt)
    ref = Reference(loaded.llm.eval(), load_tokenizer(loaded.config))
    srv, url = serve(ref)
    question = "What does her voice say about how she feels?"
    try:
        with Predictor(model_dir=ckpt, label_mode="generate", max_new_tokens=12) as p:
            local = p.analyze(clip, question=question)
        with Predictor(model_dir=ckpt, vllm=VllmSpec(url), max_new_tokens=12) as p:
            assert p.label_mode == "generate" and "vLLM engine: vllm:merged@" in p.backend_name
            served = p.analyze(clip, question=question)
    finally:
        srv.shutdown()
    assert served.record["model_answer"] == local.record["model_answer"]
    assert served.reasoning == local.reasoning and served.label == local.label
    assert local.reasoning and local.record["model_answer"]  # something to compare
    assert len(ref.requests) == 2 and {r["max_tokens"] for r in ref.requests} == {16, 12}
    with pytest.raises(EmotionLlamaError, match="its labels are generated"):
        Predictor(model_dir=ckpt, vllm=VllmSpec(url), label_mode="score")
    with pytest.raises(EmotionLlamaError, match="give a checkpoint"):
        Predictor(vllm=VllmSpec(url))


def test_compiled_scoring_gives_the_eager_label_and_scores(clip, tmp_path, tiny_config):
    """serve --compile: the label scorer's forwards through torch.compile (inductor on the CPU)."""
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained
    from emotion_llama.serve.predictor import Predictor

    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    results = []
    for compiled in (False, True):
        with Predictor(model_dir=ckpt, compile_scoring=compiled, max_new_tokens=4) as p:
            assert (p.answerer.scorer()._llm is not p.model.llm) == compiled  # type: ignore[union-attr]
            results.append(p.analyze(clip))
    eager, compiled_ = results
    assert compiled_.label == eager.label and eager.scores is not None and compiled_.scores is not None
    assert compiled_.scores == pytest.approx(eager.scores, abs=1e-5)


def test_micro_batcher_answers_requests_arriving_together_in_one_batch(predictor, clip, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from emotion_llama.media.frames import MediaError
    from emotion_llama.serve.predictor import MicroBatcher

    single = predictor.analyze(clip)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    batcher = MicroBatcher(predictor, max_batch=4, max_wait_s=2.0)
    try:
        with ThreadPoolExecutor(4) as pool:
            futs = [pool.submit(batcher.analyze, v) for v in (clip, clip, broken, clip)]
            results = [f.exception() or f.result() for f in futs]
    finally:
        batcher.close()
    assert max(batcher.batch_sizes) > 1 and sum(batcher.batch_sizes) == 4
    assert isinstance(results[2], MediaError)  # only the broken clip's caller gets an error
    for r in (results[0], results[1], results[3]):
        assert r.label == single.label and r.reasoning == single.reasoning  # same prompt, same answer
