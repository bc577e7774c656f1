"""8-bit and 4-bit LLM weights (bitsandbytes, on its CPU backend here): the two quantization routes
agree with transformers' own loader, the logits stay near the full-precision ones, the memory
estimate is the bytes the weights take, QLoRA trains only LoRA and the projections, and
``--load-in-8bit``/``--load-in-4bit`` reach the model (their refusal on ``analyze``, ``serve`` and
``evaluate``: tests/test_precision.py). FP8 answers here beside them; its own tests are in
tests/test_fp8.py."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from emotion_llama.cli import app
from emotion_llama.errors import ConfigError, EmotionLlamaError
from emotion_llama.model.builder import base_llm_state_dict, build_llm, build_model
from emotion_llama.model.quantize import (
    check_quantization,
    quantization_flags,
    quantization_of,
    require_bitsandbytes,
    weight_bytes,
)

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


def _ids(cfg, n: int = 12) -> torch.Tensor:
    return torch.randint(3, cfg.llm.vocab_size, (2, n), generator=torch.Generator().manual_seed(1))


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.llm(input_ids=ids).logits


def test_names_and_flags() -> None:
    assert check_quantization(None) is None and check_quantization("none") is None
    assert check_quantization("int8") == "8bit" and check_quantization("NF4") == "4bit"
    with pytest.raises(ConfigError, match="unknown quantization '3bit'"):
        check_quantization("3bit")
    assert quantization_flags(False, False) is None and quantization_flags(True, False) == "8bit"
    with pytest.raises(EmotionLlamaError, match="exclude each other"):
        quantization_flags(True, True)


def test_missing_bitsandbytes_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tiny_config) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(EmotionLlamaError, match=r"4bit weights need bitsandbytes.*emotion-llama\[quantize\]"):
        require_bitsandbytes("4bit")
    with pytest.raises(EmotionLlamaError, match="need bitsandbytes"):
        build_model(tiny_config, quantization="8bit")


@pytest.mark.parametrize(
    ("quantization", "layer", "tolerance"), [("8bit", "Linear8bitLt", 0.02), ("4bit", "Linear4bit", 0.25)]
)
def test_in_memory_quantization_matches_transformers_loader(
    tmp_path: Path, tiny_config, quantization: str, layer: str, tolerance: float
) -> None:
    """A random LLM quantized in place and the same weights loaded by transformers'
    BitsAndBytesConfig give the same layers and the same logits; both stay near float32."""
    torch.manual_seed(0)
    llm = build_llm(tiny_config, pretrained=False)
    llm.save_pretrained(tmp_path / "llm")
    on_disk = dataclasses.replace(
        tiny_config, llm=dataclasses.replace(tiny_config.llm, name_or_path=str(tmp_path / "llm"))
    )
    frozen = {f"llm_base.{k}": v for k, v in llm.state_dict().items()}
    full = build_model(tiny_config, frozen_state=frozen)
    mine = build_model(tiny_config, frozen_state=frozen, quantization=quantization)
    hf = build_model(on_disk, quantization=quantization)
    for model in (mine, hf):
        base = model.llm.get_base_model()
        attn = base.model.layers[0].self_attn
        assert type(attn.k_proj).__name__ == layer and type(attn.q_proj.base_layer).__name__ == layer
        assert type(base.lm_head) is torch.nn.Linear  # the head stays full precision
        assert quantization_of(model) == quantization
    ids = _ids(tiny_config)
    ref, a, b = _logits(full, ids), _logits(mine, ids), _logits(hf, ids)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert 0 < (a - ref).abs().max() < tolerance  # measured: 8bit 0.006, 4bit 0.075 (logits up to 0.64)
    # The frozen base a QLoRA checkpoint saves: the weights it computed with, plain key names.
    state, plain = base_llm_state_dict(mine), base_llm_state_dict(full)
    assert set(state) == set(plain)
    assert all(state[k].dtype == plain[k].dtype for k in plain)
    assert max((state[k] - plain[k]).abs().max() for k in plain) < tolerance / 10


@pytest.mark.parametrize("quantization", [None, "8bit", "4bit"])
def test_weight_memory_estimate_is_the_bytes_the_weights_take(tiny_config, quantization: str | None) -> None:
    estimate = weight_bytes(build_model(tiny_config, device="meta"), quantization)
    model = build_model(tiny_config, quantization=quantization, dtype=torch.bfloat16)
    serialised_only = ("bitsandbytes__nf4", "weight_format")  # format tags, not weights
    held = sum(
        v.numel() * v.element_size() for k, v in model.state_dict().items() if not k.endswith(serialised_only)
    )
    assert estimate["total"] == held


def test_inspect_prints_the_memory_of_each_mode() -> None:
    res = runner.invoke(app, ["inspect", "--json"])
    assert res.exit_code == 0, res.output
    memory = json.loads(res.stdout)["weight_bytes"]
    gib = {k: v / 2**30 for k, v in memory.items()}
    # The paper model: 6.7 B LLaMA weights + the 1 B EVA ViT (which stays bfloat16).
    assert 14.0 < gib["bfloat16"] < 15.0 and 8.0 < gib["8bit"] < 9.0 and 5.0 < gib["4bit"] < 6.0


def test_qlora_trains_only_lora_and_projections(tiny_config) -> None:
    model = build_model(tiny_config, quantization="4bit")
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in build_model(tiny_config).named_parameters() if p.requires_grad}
    ids = _ids(tiny_config)
    out = model.llm(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for n, g in grads.items() if ".lora_" in n)
    assert any(float(g.abs().max()) > 0 for n, g in grads.items() if "lora_A" in n or "lora_B" in n)


def test_qlora_run_trains_saves_resumes_and_loads(tmp_path: Path, one_thread: None) -> None:
    from emotion_llama.model.checkpoint import load_pretrained
    from emotion_llama.weights import read_safetensors

    data, run = tmp_path / "data", tmp_path / "run"
    assert runner.invoke(app, ["synth", "--out", str(data), "--n", "30", "--seed", "1"]).exit_code == 0
    common = [str(CONFIGS / "tiny_synth.yaml"), f"data={data}", f"out_dir={run}", "train.iters_per_epoch=4",
              "train.batch_size=2", "train.quantization=4bit"]  # fmt: skip
    res = runner.invoke(app, ["train", *common, "train.epochs=1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", *common, "train.epochs=2"])
    assert res.exit_code == 0, res.output
    assert "resumed from" in res.output and (run / "epoch_1" / "model.safetensors").is_file()
    saved = read_safetensors(run / "epoch_1" / "model.safetensors")
    assert any(".lora_B." in k and float(v.abs().max()) > 0 for k, v in saved.items())  # LoRA learnt
    # The checkpoint loads quantized (as trained) and in full precision, the same trainable weights.
    for quantization in ("4bit", None):
        model = load_pretrained(run / "epoch_1", quantization=quantization)
        assert quantization_of(model) == quantization
        lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
        assert len(lora) == len(saved)


def test_qlora_refuses_a_sharding_engine(tmp_path: Path) -> None:
    from emotion_llama.train.recipe import RecipeError, load_recipe

    for engine in ("train.fsdp=true", "train.deepspeed=configs/accelerate/ds_zero2.json"):
        with pytest.raises((RecipeError, EmotionLlamaError), match="cannot be sharded"):
            load_recipe(CONFIGS / "tiny_synth.yaml", ["train.quantization=4bit", engine])
    with pytest.raises((RecipeError, EmotionLlamaError), match="unknown quantization"):
        load_recipe(CONFIGS / "tiny_synth.yaml", ["train.quantization=2bit"])


def test_evaluate_names_the_quantization_in_the_model_name(tmp_path: Path, tiny_config) -> None:
    from emotion_llama.evaluate.runner import get_benchmark, model_predict_fn
    from emotion_llama.model.checkpoint import save_pretrained

    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    predict = model_predict_fn(ckpt, get_benchmark("mer2023"), quantization="nf4")
    assert predict.model_name == "emotion-llama:ckpt (4bit LLM weights)"  # type: ignore[attr-defined]
    assert model_predict_fn(ckpt, get_benchmark("mer2023")).model_name == "emotion-llama:ckpt"  # type: ignore[attr-defined]


def test_serve_refuses_quantization_without_a_model() -> None:
    res = runner.invoke(app, ["serve", "--load-in-4bit"])
    assert res.exit_code == 2 and "quantizes the LLM of --model" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["8bit", "4bit", "fp8"])
def test_a_quantized_model_answers_as_the_full_one(
    speaking_clip: Path, tmp_path: Path, tiny_config, quantization: str
) -> None:
    from emotion_llama.model.checkpoint import save_pretrained
    from emotion_llama.serve.predictor import Predictor

    torch.manual_seed(0)
    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    answers = {}
    for q in (None, quantization):
        with Predictor(model_dir=ckpt, label_mode="score", quantization=q) as p:
            assert quantization_of(p.model) == q and p.answerer.quantization == q
            answers[q] = p.analyze(speaking_clip)
    full, quant = answers[None], answers[quantization]
    assert full.scores is not None and quant.scores is not None and set(full.scores) == set(quant.scores)
    gap = max(abs(full.scores[k] - quant.scores[k]) for k in full.scores)
    print(f"{quantization}: largest probability gap {gap:.5f}")
    assert gap < {"8bit": 0.002, "4bit": 0.01, "fp8": 0.01}[quantization]  # measured: 0.0002, 0.002, 0.001
    top, second = sorted(full.scores.values(), reverse=True)[:2]
    if top - second > 2 * gap:  # a clear answer stays the same
        assert quant.label == full.label
