"""Label prediction by scoring: exact against plain full forwards, batch-invariant, and in
agreement with greedy generation on a trained model."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from emotion_llama.encoders.store import ClipFeatures
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.generation import ClipInput, Generator, build_inputs
from emotion_llama.model.scoring import LabelScorer, scored_spans
from emotion_llama.prompts import LABELS, MER_LABELS, parse_label_robust

#: With the toy tokenizer: "sad" is one token and a prefix of "sadness" (4 tokens) and "sadly";
#: "zorb" (4 tokens) is a prefix of "zorblat" and "zorbnik", which part at their 5th token.
SHARED = ("sad", "sadness", "sadly", "happy", "zorblat", "zorbnik", "zorb")
SUBTITLES = ("hi", "I really cannot believe what you just told me about the money", "so what")


def random_clips(config, n: int, seed: int = 0) -> list[ClipInput]:
    rng = np.random.default_rng(seed)
    f = config.features
    return [
        ClipInput(
            SUBTITLES[i % len(SUBTITLES)],
            rng.integers(0, 256, (40, 40, 3), dtype=np.uint8),
            ClipFeatures(
                local=rng.standard_normal(f.local_dim).astype(np.float32),
                temporal=rng.standard_normal(f.temporal_dim).astype(np.float32),
                audio=rng.standard_normal(f.audio_dim).astype(np.float32),
            ),
        )
        for i in range(n)
    ]


def reference_logprob(model, processor, clip: ClipInput, label: str, n_tokens: int | None) -> float:
    """Sum of the log-probs of the first ``n_tokens`` of ``label`` + EOS (all when None), from one
    plain forward (no cache, no padding) over prompt + answer."""
    prompt = processor.encode(clip.subtitle, "emotion")
    answer = processor.tokenizer(label, add_special_tokens=False)["input_ids"] + [processor.eos_id]
    answer = answer[:n_tokens] if n_tokens is not None else answer
    ids = torch.tensor([prompt.input_ids + answer])
    fmask = torch.tensor([prompt.feature_mask + [False] * len(answer)])
    inputs = build_inputs(processor, [clip])
    media = {k: inputs[k] for k in ("pixel_values", "local_feats", "temporal_feats", "audio_feats")}
    with torch.no_grad():
        logits = model(ids, torch.ones_like(ids), fmask, **media).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    start = len(prompt.input_ids)
    return float(sum(logp[start - 1 + i, t] for i, t in enumerate(answer)))


def test_spans_tell_candidates_apart():
    eos = 2
    answers = [[5, eos], [5, 6, eos], [7, 8, 9, eos], [7, 8, 10, eos], [11, eos]]
    assert scored_spans(answers) == [(5, eos), (5, 6), (7, 8, 9), (7, 8, 10), (11,)]
    assert scored_spans(answers, "full") == [tuple(a) for a in answers]
    with pytest.raises(EmotionLlamaError, match="same answer"):
        scored_spans([[5, eos], [5, eos]])


@pytest.mark.parametrize("labels", [LABELS, SHARED], ids=["labels", "shared-prefixes"])
@pytest.mark.parametrize("span", ["decision", "full"])
def test_scores_equal_plain_forward_reference(tiny_model, processor, tiny_config, labels, span):
    clips = random_clips(tiny_config, 3, seed=1)
    scorer = LabelScorer(tiny_model, processor, labels, span=span, max_rows=8)  # several chunks
    if labels is SHARED:
        assert scorer.extended  # the extra forward is exercised
        if span == "decision":
            assert [len(s) for s in scorer.spans] == [2, 2, 2, 1, 5, 5, 5]
    else:
        assert span == "full" or not scorer.extended  # nine distinct first tokens: one forward
    results = scorer(clips)
    for clip, res in zip(clips, results, strict=True):
        assert sum(res.scores.values()) == pytest.approx(1.0, abs=1e-6)
        assert res.label == max(res.logprobs, key=res.logprobs.__getitem__)
        for label, span_ids in zip(labels, scorer.spans, strict=True):
            want = reference_logprob(tiny_model, processor, clip, label, len(span_ids))
            assert res.logprobs[label] == pytest.approx(want, abs=1e-4), (label, span)


@pytest.mark.parametrize("labels", [LABELS, SHARED], ids=["labels", "shared-prefixes"])
def test_left_padding_gives_one_by_one_scores(tiny_model, processor, tiny_config, labels):
    clips = random_clips(tiny_config, 3, seed=2)
    scorer = LabelScorer(tiny_model, processor, labels)
    batch = scorer.build(clips)
    assert bool((batch["attention_mask"] == 0).any())  # the subtitles differ: there is padding
    batched = scorer.log_likelihoods(batch)
    single = torch.cat([scorer.log_likelihoods(scorer.build([c])) for c in clips])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_cached_vision_tokens_give_the_frame_results(tiny_model, processor, tiny_config):
    clips = random_clips(tiny_config, 2, seed=3)
    with torch.no_grad():
        pixels = build_inputs(processor, clips)["pixel_values"]
        vt = tiny_model.global_encoder(pixels)
    cached = [ClipInput(c.subtitle, None, c.features, vision_tokens=vt[i]) for i, c in enumerate(clips)]
    assert "vision_tokens" in build_inputs(processor, cached)
    scorer = LabelScorer(tiny_model, processor, SHARED)
    for a, b in zip(scorer(clips), scorer(cached), strict=True):
        assert a.label == b.label
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    gen = Generator(tiny_model, processor, max_new_tokens=4)
    assert gen(clips) == gen(cached)
    with pytest.raises(EmotionLlamaError, match="not a mix"):
        build_inputs(processor, [cached[0], clips[1]])
    with pytest.raises(EmotionLlamaError, match="neither"):
        build_inputs(processor, [ClipInput("y", None, clips[0].features)])


def _greedy_with_logits(t, clips, **kwargs):
    inputs = build_inputs(t.processor, clips, task="reason")
    out = t.model.generate(
        **inputs.as_kwargs(), max_new_tokens=12, do_sample=False, output_scores=True,
        return_dict_in_generate=True, **kwargs,
    )  # fmt: skip
    return out.sequences, torch.stack(out.scores, dim=1)  # (B, T), (B, T, V)


@pytest.mark.slow
def test_static_kv_cache_generates_the_same_text(trained_tiny):
    """A static KV cache gives the dynamic cache's logits at every step, up to float rounding, and
    so the same greedy text."""
    # on the trained model: random weights give near-uniform logits whose argmax flips with any
    # change of kernel order, which would test numerics instead of the cache
    t = trained_tiny
    clips = list(t.clips[:6])
    dyn_ids, dyn = _greedy_with_logits(t, clips)
    st_ids, st = _greedy_with_logits(t, clips, cache_implementation="static", disable_compile=True)
    assert torch.equal(st_ids, dyn_ids)
    torch.testing.assert_close(st, dyn, atol=1e-4, rtol=0)
    static = Generator(
        t.model, t.processor, task="reason", max_new_tokens=12,
        generate_kwargs={"cache_implementation": "static", "disable_compile": True},
    )(clips)  # fmt: skip
    assert static == Generator(t.model, t.processor, task="reason", max_new_tokens=12)(clips)
    assert any(x.strip() for x in static)


def test_inference_prompts_never_draw_an_instruction(processor, tiny_config):
    """Without an instruction, every call asks the task's first one (for reasoning: the EMER
    benchmark's), whatever the global RNG: the same clip gets the same prompt and answer."""
    import random

    from emotion_llama.prompts import REASON_INSTRUCTIONS, default_instruction

    clips = random_clips(tiny_config, 8)
    assert default_instruction("reason") == REASON_INSTRUCTIONS[0]
    fixed = build_inputs(processor, clips, task="reason", instruction=REASON_INSTRUCTIONS[0])
    for seed in range(5):
        random.seed(seed)
        assert torch.equal(build_inputs(processor, clips, task="reason")["input_ids"], fixed["input_ids"])


def test_rejects_bad_arguments(tiny_model, processor):
    with pytest.raises(EmotionLlamaError, match="duplicate"):
        LabelScorer(tiny_model, processor, ("sad", "sad"))
    with pytest.raises(EmotionLlamaError, match="span"):
        LabelScorer(tiny_model, processor, span="middle")  # type: ignore[arg-type]


@pytest.mark.slow
def test_scoring_agrees_with_greedy_generation(trained_tiny):
    t = trained_tiny
    scorer = LabelScorer(t.model, t.processor, LABELS)
    gen = Generator(t.model, t.processor, task="emotion", max_new_tokens=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        scored = [r.label for r in scorer(t.clips)]
        t_score = time.perf_counter() - t0
        t0 = time.perf_counter()
        greedy = [parse_label_robust(a, LABELS) for a in gen(t.clips)]
        t_greedy = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    agreement = sum(s == g for s, g in zip(scored, greedy, strict=True)) / len(t.clips)
    accuracy = sum(s == y for s, y in zip(scored, t.labels, strict=True)) / len(t.clips)
    print(
        f"agreement {agreement:.3f} over {len(t.clips)} held-out clips; scoring accuracy {accuracy:.3f}; "
        f"scoring {t_score:.3f}s vs greedy {t_greedy:.3f}s; training {t.train_seconds:.1f}s"
    )
    assert set(t.labels) <= set(MER_LABELS)
    assert agreement >= 0.95, list(zip(scored, greedy, strict=True))


def test_benchmark_script_runs(tmp_path):
    """benchmarks/serve_model.py end to end on the tiny preset (the GPU run takes the same path)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_model.py"
    out = tmp_path / "r.json"
    args = ["--batches", "1,3", "--repeats", "1", "--warmup", "0", "--reason-tokens", "3", "--static-cache"]
    args += [
        "--cached-vision",
        "--threads",
        "1",
        "--dataset-size",
        "20",
        "--tokenizer",
        "no/such-tokenizer",
        "--json",
        str(out),
    ]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "label agreement" in proc.stdout and "toy tokenizer" in proc.stdout
    result = json.loads(out.read_text())
    assert [(r["task"], r["batch"]) for r in result["rows"]] == [
        ("label", 1), ("label", 1), ("label", 3), ("label", 3), ("reason", 1), ("reason", 3)
    ]  # fmt: skip
    assert result["clips"] == 6 and result["cache"] == "static"
