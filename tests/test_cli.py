import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from emotion_llama.cli import app
from emotion_llama.model.checkpoint import expected_trainable_shapes

runner = CliRunner()


def test_inspect_paper_json():
    res = runner.invoke(app, ["inspect", "--preset", "paper", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["trainable_parameters"] == 74_993_664
    assert data["lora"] == 33_554_432 and data["projections"] == 41_439_232
    assert data["global_encoder"] > 9e8 and data["llm"] > 6.7e9
    assert data["multimodal_tokens"] == 260


def test_inspect_table_and_help():
    res = runner.invoke(app, ["inspect", "--preset", "tiny"])
    assert res.exit_code == 0 and "trainable" in res.stdout and "16,448" in res.stdout
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("inspect", "convert", "export-merged", "smoke"):
        assert cmd in res.stdout


def test_convert_authors_cli(tmp_path, tiny_config):
    sd = {k: torch.randn(*s) for k, s in expected_trainable_shapes(tiny_config).items()}
    pth = tmp_path / "ckpt.pth"
    torch.save({"model": sd}, pth)
    res = runner.invoke(
        app, ["convert", "authors", str(pth), "--preset", "tiny", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "model.safetensors").is_file()
    del sd["llama_proj.weight"]
    torch.save({"model": sd}, pth)
    res = runner.invoke(
        app, ["convert", "authors", str(pth), "--preset", "tiny", "--out", str(tmp_path / "p")]
    )
    assert res.exit_code == 2
    assert "ckpt.pth" in res.stderr and "llama_proj.weight" in res.stderr
    assert "Traceback" not in res.output


def test_export_merged_cli(tmp_path, tiny_model):
    from emotion_llama.model.checkpoint import save_pretrained

    folder = save_pretrained(tiny_model, tmp_path / "m")
    res = runner.invoke(app, ["export-merged", str(folder), "--out", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "x" / "llm" / "config.json").is_file()
    assert (tmp_path / "x" / "llm" / "tokenizer.json").is_file()
    assert not (tmp_path / "x" / "adapter").exists()
    res = runner.invoke(app, ["export-merged", str(folder), "--out", str(tmp_path / "y"), "--adapter"])
    assert res.exit_code == 0, res.output
    assert "rank 4: vLLM's --max-lora-rank" in res.output
    assert f"base LLM: {tmp_path / 'y' / 'base-llm'}" in res.output
    assert (tmp_path / "y" / "adapter" / "adapter_config.json").is_file()


def test_smoke_command_runs_end_to_end():
    # The console script, in a fresh process, as a user would run it.
    out = subprocess.run(
        [sys.executable, "-m", "emotion_llama.cli", "smoke", "--preset", "tiny"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "loss" in out.stdout and "18 tensors got gradients" in out.stdout


def test_bad_config_file_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"vision": {"image_size": 50, "patch_size": 14}}')
    res = runner.invoke(app, ["inspect", "--preset", str(bad)])
    assert res.exit_code == 2
    assert "bad.json" in res.stderr and "image_size 50" in res.stderr


@pytest.mark.slow
def test_probe_with_an_english_only_model_and_another_language_is_one_line_error(tmp_path):
    # The real offline Whisper (tiny.en) is loaded and refuses French; the clip is never read.
    res = runner.invoke(app, ["probe", str(tmp_path / "clip.mp4"), "--language", "fr"])
    assert res.exit_code == 2, res.output
    assert "English-only" in res.stderr and "'fr'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    # auto (detect) is fine for the same model: the missing clip is what fails now
    res = runner.invoke(app, ["probe", str(tmp_path / "clip.mp4"), "--language", "auto"])
    assert res.exit_code == 2 and "no such file" in res.stderr


def test_new_options_are_in_the_help():
    for cmd, options in {
        "analyze": ("--jsonl", "--csv", "--label-set", "--llm-dtype", "--max-new-tokens", "--language"),
        "annotate": ("--label-set", "--llm-dtype", "--max-new-tokens", "--language", "--asr-model"),
        "probe": ("--language", "--asr-model"),
        "extract": ("--language", "--asr-model"),
        "serve": ("--llm-dtype", "--max-new-tokens", "--language", "--asr-model"),
        "serve-llm": ("--device", "--llm-dtype"),
    }.items():
        res = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        for opt in options:
            assert opt in res.stdout, (cmd, opt)
