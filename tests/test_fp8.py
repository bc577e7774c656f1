"""FP8 matmuls (``--fp8``): the layer computes exactly the scaled e4m3 product (against float64
arithmetic on the dequantized operands), stays within e4m3 rounding of the full-precision layer,
the model conversion merges LoRA and leaves the output head alone, the trained model keeps its
labels, and the flag reaches the model from ``evaluate``, ``serve`` and ``analyze`` (and is refused
where it cannot run)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from emotion_llama.cli import app
from emotion_llama.errors import ConfigError, EmotionLlamaError
from emotion_llama.model.builder import build_model
from emotion_llama.model.fp8 import (
    FP8_MAX,
    Fp8Linear,
    check_fp8_device,
    convert_linears,
    fp8_layers,
    quantize_rows,
    to_fp8,
)
from emotion_llama.model.quantize import (
    check_quantization,
    check_trainable_quantization,
    quantization_flags,
    quantization_of,
    weight_bytes,
)

runner = CliRunner()

#: e4m3 keeps 3 mantissa bits: a normal value rounds within half a step, 2**-4 of itself.
E4M3_REL = 2.0**-4


def test_rows_round_within_e4m3_precision() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 64) * torch.logspace(-3, 3, 6).unsqueeze(1)  # rows of very different sizes
    x[3] = 0.0
    q, scale = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (6, 1)
    assert torch.equal(scale[3], torch.ones(1)) and not q[3].float().any()
    back = q.float() * scale
    # each row's largest value maps onto e4m3's largest; the rest round within half a step (or,
    # below e4m3's normal range, within its smallest subnormal step)
    assert torch.allclose(back.abs().amax(1)[[0, 1, 2, 4, 5]], x.abs().amax(1)[[0, 1, 2, 4, 5]], rtol=1e-6)
    bound = torch.maximum(x.abs() * E4M3_REL, scale * 2.0**-9)
    assert ((back - x).abs() <= bound + 1e-12).all()
    assert q.float().abs().max() <= FP8_MAX


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_layer_is_the_scaled_e4m3_product(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    lin = nn.Linear(64, 48, bias=True).to(dtype)
    x = torch.randn(2, 5, 64, dtype=dtype)
    layer = Fp8Linear.from_linear(lin)
    out = layer(x)
    assert out.shape == (2, 5, 48) and out.dtype == dtype
    # the reference: the same e4m3 operands dequantized and multiplied in float64
    xq, xs = quantize_rows(x.reshape(-1, 64))
    ref = (xq.double() * xs.double()) @ (layer.weight.double() * layer.weight_scale.double()).t()
    ref = (ref + lin.bias.double()).reshape(2, 5, 48)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bfloat16 output rounding
    assert torch.allclose(out.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())
    # and within FP8 rounding of the full-precision layer (measured: 3.5% of the output's norm)
    full = lin(x).double()
    assert (out.double() - full).norm() / full.norm() < 0.06
    assert layer(torch.zeros(0, 64, dtype=dtype)).shape == (0, 48)


def test_the_model_conversion_merges_lora_and_keeps_the_head(tiny_config) -> None:
    torch.manual_seed(2)
    model = build_model(tiny_config).eval()
    for name, p in model.llm.named_parameters():
        if "lora_B" in name:  # LoRA starts at zero: give it weight, so merging matters
            p.data.normal_(0, 0.5)
    ids = torch.randint(3, tiny_config.llm.vocab_size, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model.llm(input_ids=ids).logits.double()
        with model.llm.disable_adapter():
            no_lora = model.llm(input_ids=ids).logits.double()
    n = to_fp8(model)
    layers = tiny_config.llm.num_layers
    assert n == 7 * layers == fp8_layers(model)  # q, k, v, o, gate, up, down per decoder layer
    assert quantization_of(model.llm) == "fp8"
    assert type(model.llm.get_output_embeddings()) is nn.Linear  # the head stays
    assert not any(".lora_" in name for name, m in model.llm.named_modules() if isinstance(m, Fp8Linear))
    with torch.no_grad():
        fp8 = model.llm(input_ids=ids).logits.double()
    err = ((fp8 - full).norm() / full.norm()).item()
    lora_effect = ((no_lora - full).norm() / full.norm()).item()
    # measured: err 0.069 (e4m3 rounding through two layers), lora_effect 1.29
    assert err < 0.1 and lora_effect > 10 * err, (err, lora_effect)  # LoRA is in the FP8 weights
    # (labels: the trained model below; a random one's near-uniform logits flip with any rounding)


def test_names_flags_and_refusals(tiny_config, monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_quantization("FP8") == "fp8" and check_quantization("float8") == "fp8"
    assert quantization_flags(False, False, True) == "fp8"
    with pytest.raises(EmotionLlamaError, match="--load-in-8bit and --fp8 exclude each other"):
        quantization_flags(True, False, True)
    with pytest.raises(ConfigError, match="fp8 is an inference mode"):
        check_trainable_quantization("fp8")
    with pytest.raises(ConfigError, match="fp8 is an inference mode"):
        build_model(tiny_config, quantization="fp8")
    from emotion_llama.train.recipe import load_recipe

    with pytest.raises(EmotionLlamaError, match="fp8 is an inference mode"):
        load_recipe(Path(__file__).parents[1] / "configs/train/tiny_synth.yaml", ["train.quantization=fp8"])
    check_fp8_device("cpu", torch.float32)  # the CPU runs it (slowly)
    with pytest.raises(EmotionLlamaError, match=r"CUDA GPU .* or the CPU, not mps"):
        check_fp8_device("mps", torch.bfloat16)
    # an Ampere GPU (8.0) has no FP8 tensor cores; a Hopper one (9.0) needs bfloat16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(EmotionLlamaError, match=r"compute capability 8.9\+.*has 8.0"):
        check_fp8_device("cuda", torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    check_fp8_device("cuda:0", torch.bfloat16)
    with pytest.raises(EmotionLlamaError, match="computes in bfloat16"):
        check_fp8_device("cuda", torch.float32)


def test_the_memory_estimate_is_the_bytes_of_the_converted_layers(tiny_config) -> None:
    model = build_model(tiny_config)
    estimate = weight_bytes(build_model(tiny_config, device="meta"), "fp8")
    full = weight_bytes(build_model(tiny_config, device="meta"), None, dtype_bytes=4)
    convert_linears(model.llm)
    fp8_bytes = sum(
        m.weight.numel() * m.weight.element_size() + m.weight_scale.numel() * 4
        for m in model.llm.modules()
        if isinstance(m, Fp8Linear)
    )
    assert estimate["llm_linear"] == fp8_bytes and full["llm_linear"] == 4 * (fp8_bytes - 4 * sum(
        m.out_features for m in model.llm.modules() if isinstance(m, Fp8Linear)
    ))  # fmt: skip


def test_evaluate_loads_the_model_in_fp8_and_names_it(tmp_path: Path, tiny_config) -> None:
    from emotion_llama.evaluate.runner import get_benchmark, model_predict_fn
    from emotion_llama.model.checkpoint import load_pretrained, save_pretrained

    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    model = load_pretrained(ckpt, quantization="fp8")
    assert fp8_layers(model) == 7 * tiny_config.llm.num_layers
    predict = model_predict_fn(ckpt, get_benchmark("mer2023"), quantization="fp8", label_mode="score")
    assert predict.model_name == "emotion-llama:ckpt (label scoring) (FP8 matmuls)"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["serve", "--fp8"], "--fp8 quantizes the LLM of --model"),
        (["serve", "--fp8", "--load-in-4bit"], "--load-in-4bit and --fp8 exclude each other"),
        (
            [
                "evaluate",
                "-b",
                "mer2023",
                "--model",
                "m",
                "--data",
                "d",
                "--out",
                "o",
                "--fp8",
                "--load-in-8bit",
            ],
            "exclude each other",
        ),
    ],
)
def test_the_cli_refuses_fp8_where_it_cannot_run(command: list[str], message: str) -> None:
    res = runner.invoke(app, command)
    assert res.exit_code == 2, res.output
    assert message in res.stderr and "Traceback" not in res.output


def test_serve_refuses_fp8_with_vllm(tmp_path: Path, tiny_config) -> None:
    from emotion_llama.model.checkpoint import save_pretrained

    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    res = runner.invoke(
        app, ["serve", "--model", str(ckpt), "--engine", "vllm", "--fp8", "--vllm-url", "http://x"]
    )
    assert res.exit_code == 2 and "--fp8" in res.stderr, res.output


@pytest.mark.slow
def test_the_trained_model_keeps_its_labels_in_fp8(trained_tiny) -> None:
    from emotion_llama.model.scoring import LabelScorer
    from emotion_llama.prompts import LABELS

    t = trained_tiny
    model = copy.deepcopy(t.model)  # the session's model stays full precision
    full = LabelScorer(t.model, t.processor, LABELS)(t.clips)
    to_fp8(model)
    fp8 = LabelScorer(model, t.processor, LABELS)(t.clips)
    gap = max(abs(a.scores[k] - b.scores[k]) for a, b in zip(full, fp8, strict=True) for k in LABELS)
    same = sum(a.label == b.label for a, b in zip(full, fp8, strict=True))
    print(f"FP8: {same}/{len(full)} labels the same; largest probability gap {gap:.4f}")
    assert same == len(full)
    assert gap < 0.05


def test_the_encoders_features_hold_in_fp8() -> None:
    """The encoder ViTs in FP8 (benchmarks/encoders_gpu.py's FP8 row): MAE, VideoMAE and HuBERT of
    widths the kernel takes (multiples of 16) give features within e4m3 rounding of the plain ones."""
    from transformers import HubertModel, VideoMAEModel, ViTMAEModel

    from emotion_llama.encoders.models import (
        AudioEncoder,
        LocalEncoder,
        TemporalEncoder,
        tiny_hubert_config,
        tiny_mae_config,
        tiny_videomae_config,
    )

    torch.manual_seed(4)
    encoders = {
        "local": LocalEncoder(ViTMAEModel(tiny_mae_config(64, 32))),
        "temporal": TemporalEncoder(VideoMAEModel(tiny_videomae_config(64, 32, 4))),
        "audio": AudioEncoder(HubertModel(tiny_hubert_config(64)), do_normalize=True),
    }
    inputs = {
        "local": torch.randn(6, 3, 32, 32),
        "temporal": torch.randn(2, 4, 3, 32, 32),
        "audio": torch.randn(2, 8000) * 0.1,
    }
    for name, enc in encoders.items():
        enc.eval()
        with torch.no_grad():
            plain = enc(inputs[name])
            fp8 = copy.deepcopy(enc)
            n = convert_linears(fp8)
            out = fp8(inputs[name])
        assert n >= 12, (name, n)  # q, k, v, out, two MLP layers a block, 2 blocks
        cos = torch.nn.functional.cosine_similarity(plain, out, dim=1).min().item()
        assert plain.shape == out.shape and not torch.equal(plain, out)
        print(f"{name}: {n} FP8 layers, least cosine {cos:.5f}")
        assert cos > 0.98, (name, cos)  # measured: local 0.9931, temporal 1.0000, audio 0.9993
