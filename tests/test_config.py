import json
import subprocess
import sys

import pytest

from emotion_llama.config import (
    EmotionLlamaConfig,
    get_preset,
    load_config,
    paper_config,
    tiny_config,
)
from emotion_llama.errors import ConfigError


@pytest.mark.parametrize(
    "module",
    ["emotion_llama.config", "emotion_llama.prompts", "emotion_llama.sources", "emotion_llama.errors"],
)
def test_foundation_does_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_paper_preset_matches_spec():
    c = paper_config().validate()
    assert c.llm.name_or_path == "meta-llama/Llama-2-7b-chat-hf"
    assert (c.llm.hidden_size, c.llm.num_layers, c.llm.vocab_size) == (4096, 32, 32000)
    assert (c.vision.hidden_size, c.vision.num_layers, c.vision.num_heads) == (1408, 39, 16)
    assert (c.vision.image_size, c.vision.patch_size, c.vision.intermediate_size) == (448, 14, 6144)
    assert c.vision.num_patches == 1024 and c.vision.num_groups == 256
    assert c.vision.grouped_dim == 5632
    assert c.num_multimodal_tokens == 260
    assert (c.lora.r, c.lora.alpha, c.lora.dropout) == (64, 16, 0.05)
    assert c.lora.target_modules == ("q_proj", "v_proj")
    assert c.lora.scale == 0.25
    assert c.prompt.pad_token == "$$"
    assert c.vision.frame == "first"


def test_json_round_trip(tmp_path):
    for cfg in (paper_config(), tiny_config()):
        path = tmp_path / f"{cfg.name}.json"
        cfg.to_json(path)
        assert EmotionLlamaConfig.from_json(path) == cfg
        assert load_config(path) == cfg


def test_inconsistent_sizes_name_the_file(tmp_path):
    data = tiny_config().to_dict()
    data["vision"]["image_size"] = 50  # not a multiple of 14
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as err:
        EmotionLlamaConfig.from_json(path)
    msg = str(err.value)
    assert str(path) in msg and "image_size 50" in msg and "\n" not in msg


def test_group_size_must_divide_grid():
    data = tiny_config().to_dict()
    data["vision"]["group_size"] = 3
    with pytest.raises(ConfigError, match="group_size 3"):
        EmotionLlamaConfig.from_dict(data, source="x.json")


def test_unknown_field_and_bad_json(tmp_path):
    data = tiny_config().to_dict()
    data["lora"]["rank"] = 8
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"unknown LoRAConfig field.*rank"):
        EmotionLlamaConfig.from_json(path)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match=r"broken.json: not valid JSON"):
        EmotionLlamaConfig.from_json(broken)


def test_yaml_overrides_a_preset(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\nlora:\n  r: 2\nprompt:\n  layout: training\n")
    cfg = load_config(path)
    assert cfg.lora.r == 2 and cfg.prompt.layout == "training"
    assert cfg.vision == tiny_config().vision


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("huge")


def test_with_llm_clears_sizes():
    cfg = paper_config().with_llm("Qwen/Qwen2.5-7B-Instruct")
    assert cfg.llm.name_or_path == "Qwen/Qwen2.5-7B-Instruct"
    assert cfg.llm.hidden_size is None and cfg.llm.num_layers is None
    assert cfg.vision == paper_config().vision
