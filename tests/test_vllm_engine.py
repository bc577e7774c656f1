"""--engine vllm: the prompts as embeddings, the request bodies and the answers, checked against
Hugging Face's ``generate`` on the same model (tests/vllm_reference.py reads the requests as vLLM
does). vLLM itself needs a CUDA GPU and is not installed here."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from emotion_llama.encoders.store import ClipFeatures
from emotion_llama.model.generation import ClipInput, Generator
from emotion_llama.model.vllm_engine import (
    Greedy,
    VllmError,
    VllmGenerator,
    VllmServer,
    VllmSpec,
    answer_texts,
    clip_prompt_embeds,
    completion_answers,
    completion_request,
    drop_decoder,
    encode_embeds,
)
from vllm_reference import Reference, load_embed_as_vllm, serve

#: A fixed instruction: without one the reasoning task draws one of its pool at random.
ASK = "Explain the emotion of the person, from the face, the voice and the words."


def _clips(config, n: int = 4, seed: int = 0) -> list[ClipInput]:
    rng = np.random.default_rng(seed)
    f = config.features
    size = config.vision.image_size
    subs = ["", "so happy today", "no", "why would you ever say that to me, honestly, why"]
    return [
        ClipInput(
            subs[i % len(subs)],  # prompts of different lengths: the batch is padded
            rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
            ClipFeatures(
                *(rng.normal(size=d).astype(np.float32) for d in (f.local_dim, f.temporal_dim, f.audio_dim))
            ),
        )
        for i in range(n)
    ]


@pytest.fixture()
def lora_model(tiny_model):
    """The tiny model with non-zero LoRA weights, so that an answer depends on them."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in tiny_model.llm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return tiny_model.eval()


@pytest.fixture()
def reference(lora_model, processor):
    ref = Reference(lora_model.llm, processor.tokenizer)
    srv, url = serve(ref)
    yield ref, url
    srv.shutdown()


def test_prompt_embeds_are_the_rows_generate_decodes_from(lora_model, processor, one_thread):
    clips = _clips(lora_model.config)
    embeds = clip_prompt_embeds(lora_model, processor, clips, task="reason", instruction=ASK)
    lengths = [len(processor.encode(c.subtitle, "reason", ASK).input_ids) for c in clips]
    assert [e.shape[0] for e in embeds] == lengths and len(set(lengths)) > 1
    assert all(e.shape[1] == lora_model.config.llm.hidden_size and e.device.type == "cpu" for e in embeds)
    assert all(bool(e.abs().sum(dim=1).gt(0).all()) for e in embeds)  # no padding rows left
    hf = Generator(lora_model, processor, task="reason", instruction=ASK, max_new_tokens=12)(clips)
    alone = []  # each prompt alone, unpadded, at positions 0..L-1: what vLLM is given
    for e in embeds:
        ids = lora_model.llm.generate(
            inputs_embeds=e[None], attention_mask=torch.ones(1, e.shape[0], dtype=torch.long),
            max_new_tokens=12, do_sample=False, pad_token_id=lora_model.llm.config.eos_token_id,
        )  # fmt: skip
        alone.append(answer_texts(processor.tokenizer, [ids[0].tolist()])[0])
    assert alone == hf and any(hf)


def test_request_body_is_what_vllm_reads(lora_model, processor):
    embeds = clip_prompt_embeds(lora_model, processor, _clips(lora_model.config, 2))
    body = completion_request("merged", embeds, Greedy(7))
    assert body["model"] == "merged" and body["max_tokens"] == 7
    assert body["temperature"] == 0.0 and body["repetition_penalty"] == 1.0 and body["n"] == 1
    assert len(body["prompt_embeds"]) == 2
    for sent, e in zip(body["prompt_embeds"], embeds, strict=True):
        back = load_embed_as_vllm(sent)
        assert back.dtype == e.dtype and torch.equal(back, e)
    half = load_embed_as_vllm(encode_embeds(embeds[0].to(torch.bfloat16)))
    assert half.dtype == torch.bfloat16 and torch.equal(half, embeds[0].to(torch.bfloat16))
    with pytest.raises(VllmError, match=r"\(length, hidden\)"):
        encode_embeds(embeds[0][None])
    with pytest.raises(VllmError, match=r"not torch\.int64"):
        encode_embeds(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(VllmError, match="no prompts"):
        completion_request("merged", [], Greedy(7))


def test_answers_follow_the_choice_index_and_prefer_token_ids(processor):
    tok = processor.tokenizer
    ids = tok.encode("happy", add_special_tokens=False)
    response = {
        "choices": [{"index": 1, "text": " [/INST] sad</s>"}, {"index": 0, "text": "x", "token_ids": ids}]
    }
    answers = completion_answers(response, 2)
    assert answers[0] == ids and answers[1] == " [/INST] sad</s>"
    assert answer_texts(tok, answers) == [tok.decode(ids, skip_special_tokens=True).strip(), "sad"]
    with pytest.raises(VllmError, match="answered 1 of 2"):
        completion_answers({"choices": [{"index": 0, "text": "a"}]}, 2)
    with pytest.raises(VllmError, match="malformed"):
        completion_answers({"data": []}, 1)


def test_server_engine_answers_as_hugging_face(lora_model, processor, reference, one_thread):
    ref, url = reference
    clips = _clips(lora_model.config, 5)
    hf_reason = Generator(lora_model, processor, task="reason", instruction=ASK, max_new_tokens=10)(clips)
    hf_label = Generator(lora_model, processor, task="emotion", max_new_tokens=6)(clips)
    server = VllmServer(url)  # the served name comes from /v1/models
    assert server.model == "merged" and server.base_url == f"{url}/v1"
    # the project keeps the ViT, projections and token embeddings only: vLLM has the rest
    light = drop_decoder(copy.deepcopy(lora_model))
    n_full = sum(p.numel() for p in lora_model.parameters())
    assert sum(p.numel() for p in light.parameters()) < 0.8 * n_full
    reason = VllmGenerator(light, processor, server, task="reason", instruction=ASK, max_new_tokens=10)(clips)
    label = VllmGenerator(light, processor, server, task="emotion", max_new_tokens=6)(clips)
    assert reason == hf_reason and label == hf_label and any(reason)
    last = ref.requests[-1]
    assert last["max_tokens"] == 6 and len(last["prompt_embeds"]) == 5 and last["return_token_ids"]
    # a batch larger than one request's share: requests of 2, 2 and 1 in flight together, in order
    before = len(ref.requests)
    split = VllmServer(url, max_prompts=2, concurrency=3)
    assert VllmGenerator(light, processor, split, task="emotion", max_new_tokens=6)(clips) == hf_label
    assert sorted(len(r["prompt_embeds"]) for r in ref.requests[before:]) == [1, 2, 2]


def test_server_problems_are_named(lora_model, processor, reference):
    ref, url = reference
    clips = _clips(lora_model.config, 1)
    ref.prompt_embeds_enabled = False
    with pytest.raises(VllmError, match="--enable-prompt-embeds"):
        VllmGenerator(lora_model, processor, VllmServer(url))(clips)
    ref.prompt_embeds_enabled = True
    with pytest.raises(VllmError, match="does not exist"):
        VllmGenerator(lora_model, processor, VllmServer(url, "other"))(clips)
    with pytest.raises(VllmError, match=r"no vLLM server at http://127\.0\.0\.1:9/v1"):
        VllmServer("http://127.0.0.1:9", retries=0)


def test_spec_says_what_is_missing():
    with pytest.raises(VllmError, match=r"needs --vllm-url .* or --vllm-model"):
        VllmSpec().backend()
    with pytest.raises(VllmError, match="--vllm-lora is for vLLM in this process"):
        VllmSpec(url="http://127.0.0.1:9", lora="adapter").backend()
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(VllmError, match=r"pip install 'emotion-llama\[vllm\]'"):
            VllmSpec(model="merged/llm").backend()


def test_evaluate_cli_with_vllm_engine_writes_the_local_engines_predictions(tmp_path, tiny_config):
    """`evaluate --engine vllm --vllm-url` against a server holding the checkpoint's LLM: the same
    predictions.jsonl outputs as the default engine, and the report names the engine."""
    from typer.testing import CliRunner

    from emotion_llama.cli import app
    from emotion_llama.evaluate.runner import read_predictions
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import load_pretrained, save_pretrained
    from emotion_llama.model.tokenizer import load_tokenizer
    from test_evaluate import make_benchmark

    model = build_model(tiny_config)
    with torch.no_grad():  # LoRA weights that change the answers
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    ckpt = save_pretrained(model, tmp_path / "ckpt")
    data = tmp_path / "mer"
    make_benchmark(data, tiny_config, 5)
    loaded = load_pretrained(ckpt)
    ref = Reference(loaded.llm.eval(), load_tokenizer(loaded.config))
    srv, url = serve(ref)
    runner = CliRunner()
    base = ["evaluate", "-b", "mer2023", "-m", str(ckpt), "-d", str(data), "--batch-size", "2",
            "--max-new-tokens", "5"]  # fmt: skip
    try:
        local = runner.invoke(app, [*base, "-o", str(tmp_path / "local")])
        served = runner.invoke(
            app, [*base, "-o", str(tmp_path / "vllm"), "--engine", "vllm", "--vllm-url", url]
        )
        refused = runner.invoke(app, [*base, "-o", str(tmp_path / "x"), "--engine", "vllm", "--vllm-url", url,
                                      "--labels", "score"])  # fmt: skip
    finally:
        srv.shutdown()
    assert local.exit_code == 0, local.output
    assert served.exit_code == 0, served.output
    outputs = [
        {r["name"]: r["output"] for r in read_predictions(tmp_path / side / "predictions.jsonl")}
        for side in ("local", "vllm")
    ]
    assert outputs[0] == outputs[1] and len(outputs[0]) == 5 and any(outputs[0].values())
    assert len(ref.requests) == 3 and sum(len(r["prompt_embeds"]) for r in ref.requests) == 5
    assert f"vLLM engine: vllm:merged@{url}/v1" in (tmp_path / "vllm" / "report.md").read_text()
    assert refused.exit_code != 0 and "--labels score" in refused.output
    quantized = runner.invoke(app, [*base, "-o", str(tmp_path / "q"), "--engine", "vllm", "--vllm-url", url,
                                    "--load-in-8bit"])  # fmt: skip
    assert quantized.exit_code != 0 and "vLLM loads its own weights" in quantized.output
    no_engine = runner.invoke(app, [*base, "-o", str(tmp_path / "y"), "--vllm-url", url])
    assert no_engine.exit_code != 0 and "are for --engine vllm" in no_engine.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "vllm", "--vllm-url", "http://127.0.0.1:9"], "give a checkpoint (--model)"),
        (["--vllm-url", "http://127.0.0.1:9"], "are for --engine vllm"),
        (["--engine", "vlm"], "--engine must be local or vllm"),
        (["--compile"], "--compile compiles the full model"),
        (
            ["--model", "{ckpt}", "--engine", "vllm", "--vllm-url", "u", "--compile"],
            "--compile is for --engine local",
        ),
        (["--model", "{ckpt}", "--engine", "vllm"], "needs --vllm-url"),
        (
            ["--model", "{ckpt}", "--engine", "vllm", "--vllm-url", "u", "--static-cache"],
            "--static-cache is for",
        ),
    ],
)
def test_serve_refuses_vllm_options_that_cannot_work(tmp_path, tiny_config, args, message):
    """Checked before the server starts (the model would load in the background)."""
    from typer.testing import CliRunner

    from emotion_llama.cli import app
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained

    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt") if "{ckpt}" in args else None
    res = CliRunner().invoke(app, ["serve", *(str(ckpt) if a == "{ckpt}" else a for a in args)])
    assert res.exit_code == 2 and message in res.stderr, res.output


@pytest.mark.slow
def test_benchmark_script_compares_the_engines_on_the_same_prompts() -> None:
    """benchmarks/vllm_engine.py in its CPU mode (the reference server for vLLM): every row
    timed, and the two engines give the same answers to the same prompts."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "vllm_engine.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--reference", "--batches", "1,3", "--repeats", "1", "--warmup", "0",
         "--label-tokens", "4", "--reason-tokens", "8", "--dataset-size", "20"],
        capture_output=True, text=True, timeout=600, cwd=script.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = re.findall(r"^\| (label|reason) \| (\d) \| (hf|vllm) \| .* \| (\d)/(\d) \|$", proc.stdout, re.M)
    assert len(rows) == 8 and {(t, e) for t, _, e, _, _ in rows} == {
        (t, e) for t in ("label", "reason") for e in ("hf", "vllm")
    }
    assert all(same == n for *_, same, n in rows)
    assert "says nothing about vLLM" in proc.stdout


def test_vllm_in_this_process_without_vllm_says_how_to_install_it(tmp_path, tiny_config):
    """evaluate and serve name the extra to install (serve before its background load starts)."""
    from typer.testing import CliRunner

    from emotion_llama.cli import app
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained

    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    ckpt = str(save_pretrained(build_model(tiny_config), tmp_path / "ckpt"))
    data = tmp_path / "mer"
    from test_evaluate import make_benchmark

    make_benchmark(data, tiny_config, 2)
    runner = CliRunner()
    out = str(tmp_path / "o")
    evaluate = runner.invoke(app, ["evaluate", "-b", "mer2023", "-m", ckpt, "-d", str(data), "-o", out,
                                   "--engine", "vllm", "--vllm-model", "merged/llm"])  # fmt: skip
    serve = runner.invoke(app, ["serve", "-m", ckpt, "--engine", "vllm", "--vllm-model", "merged/llm"])
    for res in (evaluate, serve):
        assert res.exit_code != 0 and "pip install 'emotion-llama[vllm]'" in res.output, res.output
    assert not (tmp_path / "o" / "predictions.jsonl").exists()
