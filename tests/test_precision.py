"""The precision of the Emotion-LLaMA model and its encoders: one default per device (bfloat16 on
CUDA GPUs that have it, float16 on other CUDA GPUs, float32 on the CPU), ``--dtype`` on
``analyze``, ``serve`` and ``evaluate``, and a bfloat16 model answering as the float32 one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from emotion_llama.cli import app
from emotion_llama.errors import EmotionLlamaError

runner = CliRunner()


def test_the_default_precision_of_each_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from emotion_llama.precision import torch_dtype

    assert torch_dtype(None, "cpu") is torch.float32 and torch_dtype("auto", "cpu") is torch.float32
    assert torch_dtype("bf16", "cpu") is torch.bfloat16 and torch_dtype("half", "cuda") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert torch_dtype(None, "cuda") is torch.bfloat16 and torch_dtype(None, "cuda:1") is torch.bfloat16
    assert torch_dtype("float32", "cuda") is torch.float32  # asked for: kept
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert torch_dtype(None, "cuda") is torch.float16
    with pytest.raises(EmotionLlamaError, match="unknown model dtype 'int4'"):
        torch_dtype("int4", "cpu")


@pytest.mark.parametrize(
    "command",
    [
        ["analyze", "{tmp}/a.mp4", "--model", "{tmp}/ckpt"],
        ["serve", "--model", "{tmp}/ckpt"],
        ["evaluate", "-b", "mer2023", "--model", "{tmp}/ckpt", "--data", "{tmp}", "--out", "{tmp}/o"],
    ],
)
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--dtype", "float8"], "unknown model dtype 'float8'"),
        (["--load-in-8bit", "--load-in-4bit"], "exclude each other"),
    ],
)
def test_each_model_command_refuses_a_bad_precision_before_any_work(
    tmp_path: Path, command: list[str], bad: list[str], message: str
) -> None:
    args = [a.format(tmp=tmp_path) for a in command]
    res = runner.invoke(app, [*args, *bad])
    assert res.exit_code == 2, res.output
    assert message in res.stderr and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_bf16_model_and_encoders_answer_as_the_fp32_ones(
    speaking_clip: Path, tmp_path: Path, tiny_config
) -> None:
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.checkpoint import save_pretrained
    from emotion_llama.serve.predictor import Predictor

    torch.manual_seed(0)
    ckpt = save_pretrained(build_model(tiny_config), tmp_path / "ckpt")
    answers = {}
    for dtype in (None, "bfloat16"):
        with Predictor(model_dir=ckpt, label_mode="score", dtype=dtype) as p:
            want = torch.float32 if dtype is None else torch.bfloat16  # None: the CPU's default
            assert p.answerer.dtype is want
            assert {q.dtype for q in p.model.parameters()} == {want}
            enc = p.answerer.encoders
            for encoder in (enc.local, enc.temporal, enc.audio):
                assert {q.dtype for q in encoder.parameters()} == {want}
            answers[dtype] = p.analyze(speaking_clip)
    fp32, bf16 = answers[None], answers["bfloat16"]
    assert fp32.scores is not None and bf16.scores is not None and set(fp32.scores) == set(bf16.scores)
    assert max(abs(fp32.scores[k] - bf16.scores[k]) for k in fp32.scores) < 0.005  # measured: 9e-5
    top, second = sorted(fp32.scores.values(), reverse=True)[:2]
    if top - second > 0.01:  # a clear answer stays the same in bfloat16
        assert bf16.label == fp32.label
