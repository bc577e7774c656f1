"""Where a checkpoint's frozen parts come from: the ViT named in every form users have it in, the
LLM's sizes read before converting, and config paths that survive moving the folder."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from emotion_llama.config import load_config, paper_config
from emotion_llama.errors import CheckpointError, ConfigError
from emotion_llama.model import builder
from emotion_llama.model.builder import build_llm, build_model, load_vision_weights
from emotion_llama.model.checkpoint import (
    convert_authors_checkpoint,
    expected_trainable_shapes,
    interpolate_position_embedding,
    load_pretrained,
    repoint,
    save_pretrained,
    write_safetensors,
)
from helpers import random_media
from test_model_checkpoint import authors_state, lavis_eva_state


def _cli(*args: str):  # type: ignore[no-untyped-def]
    from emotion_llama.cli import app

    return CliRunner().invoke(app, list(args))


def _logits(model, processor, config) -> torch.Tensor:  # type: ignore[no-untyped-def]
    batch = processor.collate([processor.encode("I can't believe it!", "emotion")])
    with torch.no_grad():
        return model(**batch, **random_media(config, 1)).logits


# -- item 1: the ViT wherever it is named ---------------------------------------------------------
def test_a_converted_eva_file_loads_as_vision_weights_without_converting_again(
    tmp_path, tiny_config, monkeypatch
) -> None:
    pth = tmp_path / "eva_vit_g.pth"
    torch.save(lavis_eva_state(tiny_config.vision), pth)
    out = tmp_path / "eva_448.safetensors"
    cfg_file = tmp_path / "cfg.json"
    tiny_config.to_json(cfg_file)
    res = _cli("convert", "eva", str(pth), "--out", str(out), "--preset", str(cfg_file))
    assert res.exit_code == 0, res.output
    from_pth = build_model(replace(tiny_config, vision=replace(tiny_config.vision, weights=str(pth))))

    def no_conversion(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the LAVIS file was converted again")

    monkeypatch.setattr(builder, "convert_eva_state", no_conversion)
    from_st = build_model(replace(tiny_config, vision=replace(tiny_config.vision, weights=str(out))))
    a, b = from_pth.global_encoder.state_dict(), from_st.global_encoder.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the same file under another name (no .safetensors suffix) is recognised by its header
    renamed = tmp_path / "eva_448.bin"
    shutil.copyfile(out, renamed)
    state = load_vision_weights(str(renamed), tiny_config.vision)
    assert torch.equal(state["embeddings.class_embedding"], a["vit.embeddings.class_embedding"])


def _tiny_blip2(tiny_config):  # type: ignore[no-untyped-def]
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    v = tiny_config.vision
    config = Blip2Config(
        vision_config={
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_layers,
            "num_attention_heads": v.num_heads,
            "patch_size": v.patch_size,
            "image_size": v.pretrained_image_size,  # the hub model is at 224 px, not 448
            "layer_norm_eps": v.layer_norm_eps,
            "qkv_bias": True,
        },
        qformer_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "encoder_hidden_size": v.hidden_size,
        },
        text_config={
            "model_type": "opt",
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "ffn_dim": 64,
            "vocab_size": 100,
            "word_embed_proj_dim": 32,
        },
        num_query_tokens=4,
    )
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # a trained tower has no zero biases: make every tensor distinctive
        for p in model.vision_model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("sharded", [False, True])
def test_a_blip2_model_folder_gives_its_vision_tower(tmp_path, tiny_config, sharded) -> None:
    blip2 = _tiny_blip2(tiny_config)
    folder = tmp_path / "blip2-opt"
    blip2.save_pretrained(folder, max_shard_size="40KB" if sharded else "5GB")
    assert (folder / "model.safetensors.index.json").is_file() == sharded
    # at the hub model's own resolution the encoder reproduces its tower (before post_layernorm)
    v = replace(tiny_config.vision, image_size=tiny_config.vision.pretrained_image_size)
    from emotion_llama.model.modeling import GlobalEncoder

    enc = GlobalEncoder(v).eval()
    enc.vit.load_state_dict(load_vision_weights(str(folder), v), strict=True)
    x = torch.randn(2, 3, v.image_size, v.image_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = blip2.vision_model(pixel_values=x, output_hidden_states=True).hidden_states[-1]
        got = enc.vit(pixel_values=x).last_hidden_state
    assert ((got - want).norm() / want.norm()).item() < 1e-6
    # at the model's resolution (448 px for paper) the position grid is interpolated
    state = load_vision_weights(str(folder), tiny_config.vision)
    pos = blip2.vision_model.embeddings.position_embedding.detach()
    assert torch.equal(
        state["embeddings.position_embedding"], interpolate_position_embedding(pos, tiny_config.vision.grid)
    )
    assert not any(k.startswith(("post_layernorm", "qformer", "language_model")) for k in state)


def test_a_blip2_vision_model_folder_and_bad_names(tmp_path, tiny_config) -> None:
    blip2 = _tiny_blip2(tiny_config)
    blip2.vision_model.save_pretrained(tmp_path / "vision-only")
    state = load_vision_weights(str(tmp_path / "vision-only"), tiny_config.vision)
    assert torch.equal(state["embeddings.class_embedding"], blip2.vision_model.embeddings.class_embedding)
    with pytest.raises(CheckpointError, match="no such file or folder"):
        load_vision_weights(str(tmp_path / "nowhere.pth"), tiny_config.vision)
    truncated = {k: v for k, v in blip2.vision_model.state_dict().items() if "layers.1." not in k}
    write_safetensors(truncated, tmp_path / "cut.safetensors", {})
    with pytest.raises(CheckpointError, match=r"cut.safetensors: .*ViT key\(s\) missing: encoder.layers.1"):
        load_vision_weights(str(tmp_path / "cut.safetensors"), tiny_config.vision)


SIZE_FIELDS = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "vocab_size")


# -- item 2: convert authors with the LLM's sizes left open --------------------------------------------
def test_convert_authors_reads_open_llm_sizes_from_the_named_llm(tmp_path, tiny_config) -> None:
    llm_dir = tmp_path / "my-llm"
    build_llm(tiny_config, pretrained=False).config.save_pretrained(llm_dir)  # only its config.json
    yaml_file = tmp_path / "other-llm.yaml"
    nulls = "\n".join(f"  {k}: null" for k in SIZE_FIELDS)
    yaml_file.write_text(f"preset: paper\nllm:\n  name_or_path: {llm_dir}\n  model_type: auto\n{nulls}\n")
    config = load_config(yaml_file)
    assert config.llm.hidden_size is None
    with pytest.raises(ConfigError, match="LLM sizes unknown"):
        expected_trainable_shapes(config)  # what `convert authors` failed on before
    sizes = {k: getattr(tiny_config.llm, k) for k in SIZE_FIELDS}
    sized = paper_config().with_llm(str(llm_dir))
    sized = replace(sized, llm=replace(sized.llm, **sizes))
    pth = tmp_path / "Emoation_LLaMA.pth"
    torch.save({"model": authors_state(sized)}, pth)
    res = _cli("convert", "authors", str(pth), "--out", str(tmp_path / "ckpt"), "--preset", str(yaml_file))
    assert res.exit_code == 0, res.output
    written = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert written["llm"]["hidden_size"] == tiny_config.llm.hidden_size
    assert written["llm"]["model_type"] == "llama"
    # the projections follow the LLM: 64 wide here, not 4096
    folder, _ = convert_authors_checkpoint(pth, config, tmp_path / "ckpt2")
    assert (folder / "model.safetensors").is_file()


# -- item 5: a checkpoint folder that moves -----------------------------------------------------------
@pytest.fixture
def ckpt_with_local_sources(tmp_path, tiny_config):  # type: ignore[no-untyped-def]
    """root/models/{llm,eva.safetensors} and root/runs/ckpt naming them by absolute paths."""
    root = tmp_path / "root"
    models = root / "models"
    llm = build_llm(tiny_config, pretrained=False)
    llm.save_pretrained(models / "llm")
    eva = models / "eva.safetensors"
    torch.save(lavis_eva_state(tiny_config.vision), tmp_path / "eva.pth")
    write_safetensors(load_vision_weights(str(tmp_path / "eva.pth"), tiny_config.vision), eva, {})
    config = replace(
        tiny_config,
        llm=replace(tiny_config.llm, name_or_path=str(models / "llm"), tokenizer="toy"),
        vision=replace(tiny_config.vision, weights=str(eva)),
    )
    model = build_model(config)
    ckpt = save_pretrained(model, root / "runs" / "ckpt")
    return root, ckpt, model


def test_config_json_names_local_sources_relative_to_the_folder(ckpt_with_local_sources) -> None:
    root, ckpt, _ = ckpt_with_local_sources
    data = json.loads((ckpt / "config.json").read_text())
    assert data["llm"]["name_or_path"] == "../../models/llm"
    assert data["vision"]["weights"] == "../../models/eva.safetensors"
    assert data["llm"]["tokenizer"] == "toy"  # names stay names
    assert data["_absolute_paths"]["llm.name_or_path"] == str((root / "models" / "llm").resolve())
    # no absolute path anywhere else in the file
    rest = {k: v for k, v in data.items() if k != "_absolute_paths"}
    assert str(root) not in json.dumps(rest)
    assert not (ckpt / "frozen.safetensors").exists()  # the frozen parts come from the sources


def test_moved_with_its_models_or_alone_it_still_loads(ckpt_with_local_sources, tmp_path, processor) -> None:
    root, ckpt, model = ckpt_with_local_sources
    want = _logits(model.eval(), processor, model.config)
    # 1. the whole tree moves (another machine, another disk): the relative paths follow
    moved_root = tmp_path / "elsewhere" / "root"
    shutil.move(str(root), moved_root)
    loaded = load_pretrained(moved_root / "runs" / "ckpt").eval()
    assert loaded.config.llm.name_or_path == str((moved_root / "models" / "llm").resolve())
    assert torch.allclose(_logits(loaded, processor, loaded.config), want, atol=1e-6)
    # 2. the checkpoint alone moves on this machine: the absolute paths it was written from
    shutil.move(str(moved_root), root)
    alone = tmp_path / "copy" / "deep" / "ckpt"
    shutil.copytree(ckpt, alone)
    loaded = load_pretrained(alone).eval()
    assert torch.allclose(_logits(loaded, processor, loaded.config), want, atol=1e-6)


def test_when_the_models_are_gone_the_error_says_how_to_repoint(
    ckpt_with_local_sources, tmp_path, processor
) -> None:
    root, ckpt, model = ckpt_with_local_sources
    want = _logits(model.eval(), processor, model.config)
    alone = tmp_path / "copy" / "ckpt"
    shutil.copytree(ckpt, alone)
    shutil.move(str(root / "models"), tmp_path / "new-models")
    with pytest.raises(ConfigError, match=r"emotion-llama repoint CKPT --llm"):
        load_pretrained(alone)
    res = _cli(
        "repoint",
        str(alone),
        "--llm",
        str(tmp_path / "new-models" / "llm"),
        "--vision",
        str(tmp_path / "new-models" / "eva.safetensors"),
    )
    assert res.exit_code == 0, res.output
    assert "llm.name_or_path" in res.output and "vision.weights" in res.output
    data = json.loads((alone / "config.json").read_text())
    assert data["llm"]["name_or_path"] == "../../new-models/llm"
    loaded = load_pretrained(alone).eval()
    assert torch.allclose(_logits(loaded, processor, loaded.config), want, atol=1e-6)
    assert _cli("repoint", str(alone)).exit_code == 2  # nothing to change
    assert repoint(alone, llm="meta-llama/Llama-2-7b-chat-hf")[0][2] == "meta-llama/Llama-2-7b-chat-hf"
    assert json.loads((alone / "config.json").read_text())["llm"]["name_or_path"] == (
        "meta-llama/Llama-2-7b-chat-hf"
    )
