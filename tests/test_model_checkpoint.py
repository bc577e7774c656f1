import json
import math
import shutil
import zipfile
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from emotion_llama.config import VisionConfig, paper_config
from emotion_llama.errors import CheckpointError
from emotion_llama.model.builder import build_model
from emotion_llama.model.checkpoint import (
    convert_authors_checkpoint,
    convert_authors_state,
    convert_eva_state,
    expected_trainable_shapes,
    export_merged,
    load_pretrained,
    load_trainable,
    merge_lora_state,
    read_authors_checkpoint,
    save_pretrained,
    trainable_state,
)
from emotion_llama.model.keys import to_module_key
from helpers import random_media


def authors_state(config, seed=0):
    """A checkpoint in the authors' layout (SPEC 3 key table) with random values, non-zero LoRA B."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(*shape, generator=g) * 0.5 for k, shape in expected_trainable_shapes(config).items()}
    sd["attention.in_proj_weight"] = torch.randn(3, 3)  # the unused fusion head
    return sd


def test_spec_key_table_for_paper():
    shapes = expected_trainable_shapes(paper_config())
    p = "llama_model.base_model.model.model.layers"
    assert shapes[f"{p}.0.self_attn.q_proj.lora_A.weight"] == (64, 4096)
    assert shapes[f"{p}.31.self_attn.v_proj.lora_B.weight"] == (4096, 64)
    assert shapes["llama_proj.weight"] == (4096, 5632) and shapes["llama_proj.bias"] == (4096,)
    assert shapes["cls_tk_llama_proj.weight"] == (4096, 1408)
    for i in (1, 2, 3):
        assert shapes[f"feats_llama_proj{i}.weight"] == (4096, 1024)
    assert len(shapes) == 32 * 2 * 2 + 10
    assert sum(math.prod(s) for s in shapes.values()) == 74_993_664


def test_key_mapping_inserts_peft_adapter_name():
    k = "llama_model.base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"
    assert to_module_key(k) == "llm.base_model.model.model.layers.3.self_attn.q_proj.lora_A.default.weight"
    assert to_module_key("llama_proj.bias") == "llama_proj.bias"


def test_authors_checkpoint_converts_and_loads_strictly(tmp_path, tiny_config, processor):
    sd = authors_state(tiny_config)
    sd["some.other.key"] = torch.zeros(1)
    pth = tmp_path / "Emoation_LLaMA.pth"
    torch.save({"model": sd, "optimizer": {"state": {}}, "epoch": 3}, pth)
    folder, unexpected = convert_authors_checkpoint(pth, tiny_config, tmp_path / "conv")
    assert unexpected == ["some.other.key"]  # listed; attention.* silently ignored
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()

    from emotion_llama.model.checkpoint import read_safetensors

    model = build_model(tiny_config)
    base_logits = _logits(model, processor, tiny_config)
    load_trainable(model, read_safetensors(folder / "model.safetensors"), folder)
    params = dict(model.named_parameters())
    for key, value in sd.items():
        if key.startswith("attention.") or key == "some.other.key":
            continue
        assert torch.equal(params[to_module_key(key)], value), key  # every tensor where it belongs
    # Non-zero LoRA B: the adapters change the output (they were not silently dropped).
    adapted = _logits(model, processor, tiny_config)
    with model.llm.disable_adapter():
        no_lora = _logits(model, processor, tiny_config)
    assert not torch.allclose(adapted, no_lora, atol=1e-4)
    assert not torch.allclose(adapted, base_logits, atol=1e-4)


def _logits(model, processor, config):
    batch = processor.collate([processor.encode("hello there", "emotion")])
    with torch.no_grad():
        return model(**batch, **random_media(config, 1, seed=11)).logits


def test_missing_key_fails_with_its_name(tmp_path, tiny_config):
    sd = authors_state(tiny_config)
    gone = "llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    del sd[gone]
    del sd["feats_llama_proj2.bias"]
    pth = tmp_path / "ckpt.pth"
    torch.save({"model": sd}, pth)
    with pytest.raises(CheckpointError) as err:
        convert_authors_checkpoint(pth, tiny_config, tmp_path / "out")
    msg = str(err.value)
    assert str(pth) in msg and "2 expected key(s) missing" in msg
    assert gone in msg and "feats_llama_proj2.bias" in msg


def test_keys_with_default_segment_are_accepted(tiny_config):
    sd = {
        k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
        for k, v in authors_state(tiny_config).items()
    }
    state, unexpected = convert_authors_state(sd, tiny_config)
    assert unexpected == [] and set(state) == set(expected_trainable_shapes(tiny_config))


def test_checkpoint_of_another_preset(tmp_path, tiny_config):
    other = replace(tiny_config, lora=replace(tiny_config.lora, r=8))
    pth = tmp_path / "r8.pth"
    torch.save({"model": authors_state(other)}, pth)
    with pytest.raises(CheckpointError, match=r"r8.pth: .*wrong shape for preset 'tiny'.*another preset"):
        convert_authors_checkpoint(pth, tiny_config, tmp_path / "out")


def test_not_a_checkpoint_truncated_and_empty(tmp_path, tiny_config):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match=r"notes.pth: not a PyTorch checkpoint"):
        read_authors_checkpoint(text)
    good = tmp_path / "good.pth"
    torch.save({"model": authors_state(tiny_config)}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert not zipfile.is_zipfile(cut)
    with pytest.raises(CheckpointError, match=r"cut.pth: truncated or corrupt"):
        read_authors_checkpoint(cut)
    garbled = tmp_path / "garbled.pth"
    garbled.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match=r"garbled.pth: not a readable PyTorch checkpoint"):
        read_authors_checkpoint(garbled)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pth: the file is empty"):
        read_authors_checkpoint(empty)
    with pytest.raises(CheckpointError, match="no such file"):
        read_authors_checkpoint(tmp_path / "absent.pth")
    for err_path in (text, cut, garbled, empty):
        with pytest.raises(CheckpointError) as err:
            read_authors_checkpoint(err_path)
        assert "\n" not in str(err.value)


def test_pickled_objects_are_refused(tmp_path):
    import argparse

    bad = tmp_path / "evil.pth"
    torch.save({"model": {"x": argparse.Namespace(a=1)}}, bad)  # an arbitrary object
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        read_authors_checkpoint(bad)


def test_save_load_round_trip(tmp_path, tiny_config, processor):
    model = build_model(tiny_config)
    with torch.no_grad():  # make LoRA non-trivial
        for _n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    folder = save_pretrained(model, tmp_path / "ckpt")
    assert (folder / "frozen.safetensors").is_file()  # random base weights have no other source
    again = load_pretrained(folder)
    assert again.config == model.config
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2), n1
    assert torch.equal(
        _logits(model.eval(), processor, tiny_config), _logits(again.eval(), processor, tiny_config)
    )


def test_load_pretrained_bad_inputs(tmp_path, tiny_config):
    model = build_model(tiny_config)
    folder = save_pretrained(model, tmp_path / "ckpt")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"broken/model.safetensors: not a readable safetensors"):
        load_pretrained(broken)
    nofrozen = tmp_path / "nofrozen"
    shutil.copytree(folder, nofrozen)
    (nofrozen / "frozen.safetensors").unlink()
    with pytest.raises(CheckpointError, match="names no source for global_encoder, llm_base"):
        load_pretrained(nofrozen)
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_pretrained(tmp_path / "nothing")


# -- EVA ViT-g -----------------------------------------------------------------------------------
def lavis_eva_state(v: VisionConfig, seed=0):
    """Random weights under BLIP-2's eva_vit_g.pth key names, at the pretrained resolution."""
    g = torch.Generator().manual_seed(seed)
    d, m = v.hidden_size, v.intermediate_size
    n = (v.pretrained_image_size // v.patch_size) ** 2

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    sd = {
        "cls_token": r(1, 1, d),
        "pos_embed": r(1, 1 + n, d),
        "patch_embed.proj.weight": r(d, 3, v.patch_size, v.patch_size),
        "patch_embed.proj.bias": r(d),
    }
    for i in range(v.num_layers):
        b = f"blocks.{i}."
        sd.update(
            {
                b + "norm1.weight": 1 + r(d),
                b + "norm1.bias": r(d),
                b + "attn.qkv.weight": r(3 * d, d),
                b + "attn.q_bias": r(d),
                b + "attn.v_bias": r(d),
                b + "attn.proj.weight": r(d, d),
                b + "attn.proj.bias": r(d),
                b + "norm2.weight": 1 + r(d),
                b + "norm2.bias": r(d),
                b + "mlp.fc1.weight": r(m, d),
                b + "mlp.fc1.bias": r(m),
                b + "mlp.fc2.weight": r(d, m),
                b + "mlp.fc2.bias": r(d),
            }
        )
    return sd


def reference_eva_forward(sd, v: VisionConfig, x):
    """An independent, plain-tensor EVA ViT forward (pre-norm blocks, qkv with q/v bias only,
    exact GELU, no final norm), with the position grid interpolated as the authors did."""
    d, h = v.hidden_size, v.num_heads
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=v.patch_size)
    x = x.flatten(2).transpose(1, 2)
    b = x.shape[0]
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), x], dim=1)
    pos = sd["pos_embed"]
    old = int((pos.shape[1] - 1) ** 0.5)
    grid = pos[:, 1:].reshape(1, old, old, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(v.grid, v.grid), mode="bicubic", align_corners=False)
    x = x + torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, d)], dim=1)
    for i in range(v.num_layers):
        p = f"blocks.{i}."
        y = F.layer_norm(x, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=v.layer_norm_eps)
        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros(d), sd[p + "attn.v_bias"]])
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], bias).reshape(b, -1, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q, k, val = qkv[0], qkv[1], qkv[2]
        att = ((q * (d // h) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        y = (att @ val).transpose(1, 2).reshape(b, -1, d)
        x = x + F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        y = F.layer_norm(x, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=v.layer_norm_eps)
        y = F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        x = x + F.linear(y, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return x


def test_eva_conversion_matches_reference_forward(tiny_config):
    from emotion_llama.model.modeling import GlobalEncoder

    v = tiny_config.vision  # 28 px weights (2x2 grid) used at 56 px (4x4 grid)
    sd = lavis_eva_state(v)
    enc = GlobalEncoder(v).eval()
    enc.vit.load_state_dict(convert_eva_state(sd, v), strict=True)
    x = torch.randn(2, 3, v.image_size, v.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = enc.vit(pixel_values=x).last_hidden_state
        want = reference_eva_forward(sd, v, x)
    rel = ((got - want).norm() / want.norm()).item()
    assert rel < 1e-5, rel
    assert enc.vit.embeddings.position_embedding.shape == (1, 1 + 16, v.hidden_size)


def test_eva_conversion_errors(tiny_config):
    v = tiny_config.vision
    sd = lavis_eva_state(v)
    del sd["blocks.1.attn.q_bias"]
    with pytest.raises(CheckpointError, match=r"eva.pth: EVA ViT-g key missing: blocks.1.attn.q_bias"):
        convert_eva_state(sd, v, "eva.pth")
    sd = lavis_eva_state(replace(v, num_layers=4))
    with pytest.raises(CheckpointError, match=r"beyond vision.num_layers=3"):
        convert_eva_state(sd, v, "eva.pth")


def test_eva_cli_and_model_load_from_file(tmp_path, tiny_config, processor):
    from typer.testing import CliRunner

    from emotion_llama.cli import app

    pth = tmp_path / "eva_vit_g.pth"
    sd = lavis_eva_state(tiny_config.vision)
    torch.save(sd, pth)
    cfg = replace(tiny_config, vision=replace(tiny_config.vision, weights=str(pth)))
    model = build_model(cfg)  # the builder fetches (here: a local path) and converts
    assert torch.equal(model.global_encoder.vit.embeddings.class_embedding, sd["cls_token"])
    cfg.to_json(tmp_path / "cfg.json")
    out = tmp_path / "eva.safetensors"
    res = CliRunner().invoke(
        app, ["convert", "eva", str(pth), "--out", str(out), "--preset", str(tmp_path / "cfg.json")]
    )
    assert res.exit_code == 0, res.output
    from safetensors.torch import load_file

    assert torch.equal(load_file(out)["embeddings.class_embedding"], sd["cls_token"])


# -- merged export -------------------------------------------------------------------------------
def test_merge_formula_by_hand():
    a, b, w = torch.randn(4, 6), torch.randn(6, 4), torch.randn(6, 6)
    base = {"model.layers.0.self_attn.q_proj.weight": w}
    lora = {
        "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a,
        "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": b,
    }
    merged = merge_lora_state(base, lora, 0.25)
    assert torch.allclose(merged["model.layers.0.self_attn.q_proj.weight"], w + 0.25 * b @ a)


def test_merged_export_logits_equal_adapter_logits(tmp_path, tiny_config, processor):
    from transformers import AutoModelForCausalLM

    model = build_model(tiny_config)
    load_trainable(model, convert_authors_state(authors_state(tiny_config, seed=5), tiny_config)[0], "x")
    model.eval()
    folder = save_pretrained(model, tmp_path / "ckpt")
    out = export_merged(folder, tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(out / "llm").eval()  # transformers alone
    batch = processor.collate([processor.encode("hello there", "emotion"), processor.encode("hi", "emotion")])
    media = random_media(tiny_config, 2, seed=2)
    with torch.no_grad():
        ours = model(**batch, **media)
        embeds = model.embed(
            batch["input_ids"], batch["feature_mask"], ours.features, batch["attention_mask"]
        )
        from emotion_llama.model.modeling import position_ids_from_mask

        theirs = plain(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            position_ids=position_ids_from_mask(batch["attention_mask"]),
        ).logits
    real = batch["attention_mask"].bool()
    # Tolerance: fp32, merged vs. unmerged matmul order differs only by rounding.
    assert torch.allclose(ours.logits[real], theirs[real], atol=1e-4, rtol=1e-4)
    from safetensors.torch import load_file

    proj = load_file(out / "projections.safetensors")
    assert set(proj) == {k for k in trainable_state(model) if ".lora_" not in k}
    assert (out / "global_encoder.safetensors").is_file()


def test_adapter_export_on_its_base_is_the_merged_llm(tmp_path, tiny_config):
    """export-merged --adapter: PEFT's own loader puts OUT/adapter on OUT/base-llm and gets the
    merged OUT/llm's logits (what `vllm serve BASE --enable-lora` computes), rank and targets
    as the checkpoint's."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = build_model(tiny_config)
    load_trainable(model, convert_authors_state(authors_state(tiny_config, seed=6), tiny_config)[0], "x")
    folder = save_pretrained(model.eval(), tmp_path / "ckpt")
    out = export_merged(folder, tmp_path / "merged", adapter=True)
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == tiny_config.lora.r and adapter["lora_alpha"] == tiny_config.lora.alpha
    assert set(adapter["target_modules"]) == set(tiny_config.lora.target_modules)
    assert adapter["bias"] == "none" and not adapter.get("modules_to_save")  # what vLLM's LoRA takes
    info = json.loads((out / "config.json").read_text())["merged"]
    assert info == {"llm": "llm", "lora_scale": tiny_config.lora.scale, "adapter": "adapter",
                    "base_llm": "base-llm", "lora_rank": tiny_config.lora.r}  # fmt: skip
    assert (out / "base-llm" / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out / "llm").eval()
    base = AutoModelForCausalLM.from_pretrained(out / "base-llm").eval()
    on_base = PeftModel.from_pretrained(base, out / "adapter").eval()
    ids = torch.randint(3, tiny_config.llm.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b, plain = merged(ids).logits, on_base(ids).logits, on_base.get_base_model()
        with on_base.disable_adapter():
            c = plain(ids).logits
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4) and not torch.allclose(a, c, atol=1e-3)
