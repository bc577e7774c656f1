from dataclasses import replace

import pytest
import torch

from emotion_llama.errors import FeatureCountError
from emotion_llama.model.builder import build_model, parameter_counts
from emotion_llama.model.keys import is_trainable_key
from emotion_llama.model.modeling import group_patches
from helpers import random_media


def test_paper_preset_trainable_parameters_on_meta():
    from emotion_llama.config import paper_config

    model = build_model(paper_config(), device="meta")
    counts = parameter_counts(model)
    assert counts["lora"] == 33_554_432
    assert counts["projections"] == 41_439_232
    assert counts["trainable_parameters"] == 74_993_664
    assert next(model.parameters()).device.type == "meta"
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    assert shapes["llama_proj.weight"] == (4096, 5632)
    assert shapes["cls_tk_llama_proj.weight"] == (4096, 1408)
    assert shapes["llm.base_model.model.model.layers.31.self_attn.v_proj.lora_B.default.weight"] == (4096, 64)


def test_grouping_is_four_consecutive_patches_of_a_row():
    # 4x4 grid of patches, each patch's feature = its raster index.
    patches = torch.arange(16, dtype=torch.float32).view(1, 16, 1)
    groups = group_patches(patches, 4)
    assert groups.shape == (1, 4, 4)
    assert groups[0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    # Not a 2x2 block (which would be [0, 1, 4, 5]).
    d = torch.randn(2, 1024, 3)
    g = group_patches(d, 4)
    assert torch.equal(g[1, 5], torch.cat([d[1, 20], d[1, 21], d[1, 22], d[1, 23]]))


def test_global_encoder_has_no_final_norm_and_a_fresh_ln_vision(tiny_model, tiny_config):
    enc = tiny_model.global_encoder
    assert isinstance(enc.vit.post_layernorm, torch.nn.Identity)
    assert torch.equal(enc.ln_vision.weight, torch.ones_like(enc.ln_vision.weight))
    assert torch.equal(enc.ln_vision.bias, torch.zeros_like(enc.ln_vision.bias))
    assert enc.ln_vision.eps == 1e-5
    px = random_media(tiny_config, 2)["pixel_values"]
    with torch.no_grad():
        emb = enc.vit.embeddings(px)
        raw = enc.vit.encoder(inputs_embeds=emb).last_hidden_state
        want = torch.nn.functional.layer_norm(raw, (raw.shape[-1],), eps=1e-5)
        got = enc(px)
    assert got.shape == (2, 1 + tiny_config.vision.num_patches, tiny_config.vision.hidden_size)
    assert torch.allclose(got, want, atol=1e-6)


def test_feature_order_and_fusion(tiny_model, processor, tiny_config):
    media = random_media(tiny_config, 2)
    batch = processor.collate(
        [processor.encode("hello", "emotion"), processor.encode("a longer one here", "emotion")]
    )
    with torch.no_grad():
        vt = tiny_model.global_encoder(media["pixel_values"])
        feats = tiny_model.encode(**media)
        g = tiny_config.vision.num_groups
        # [G groups, local, temporal, audio, CLS]
        assert torch.allclose(feats[:, g], tiny_model.feats_llama_proj1(media["local_feats"]))
        assert torch.allclose(feats[:, g + 1], tiny_model.feats_llama_proj2(media["temporal_feats"]))
        assert torch.allclose(feats[:, g + 2], tiny_model.feats_llama_proj3(media["audio_feats"]))
        assert torch.allclose(feats[:, g + 3], tiny_model.cls_tk_llama_proj(vt[:, 0]))
        assert torch.allclose(feats[:, 0], tiny_model.llama_proj(vt[:, 1:5].reshape(2, -1)))
        embeds = tiny_model.embed(batch["input_ids"], batch["feature_mask"], feats, batch["attention_mask"])
        table = tiny_model.llm.get_input_embeddings()(batch["input_ids"])
    fm, am = batch["feature_mask"], batch["attention_mask"].bool()
    for i in range(2):
        assert torch.equal(embeds[i][fm[i]], feats[i])
        text = am[i] & ~fm[i]
        assert torch.equal(embeds[i][text], table[i][text])
        assert (embeds[i][~am[i]] == 0).all()  # left padding gets zero embeddings


def test_feature_count_mismatch_is_a_clear_error(tiny_model, processor, tiny_config):
    batch = processor.collate([processor.encode("hello", "emotion")])
    feats = torch.zeros(1, tiny_config.num_multimodal_tokens - 1, 64)
    with pytest.raises(FeatureCountError, match=r"\[8\] feature positions per sample but 1 x 7"):
        tiny_model.embed(batch["input_ids"], batch["feature_mask"], feats)


def test_one_step_lowers_loss_and_touches_only_trainable(tiny_config, processor):
    model = build_model(tiny_config)
    model.train()
    samples = [
        processor.encode("what a day", "emotion", answer="happy", layout="training"),
        processor.encode(
            "leave me alone", "reason", instruction="Why?", answer="He is angry.", layout="training"
        ),
    ]
    batch = processor.collate(samples, padding_side="right")
    media = random_media(tiny_config, 2, seed=3)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss0 = model(**batch, **media).loss
    loss0.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(is_trainable_key(n) for n in grads)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == grads
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        loss1 = model(**batch, **media).loss
    assert loss1 < loss0
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[n]), n


def test_loss_counts_answer_tokens_only(tiny_model, processor, tiny_config):
    s = processor.encode("hello", "emotion", answer="happy", layout="training")
    batch = processor.collate([s], padding_side="right")
    media = random_media(tiny_config, 1)
    with torch.no_grad():
        out = tiny_model(**batch, **media)
    logits, labels = out.logits[0, :-1], batch["labels"][0, 1:]
    keep = labels != -100
    assert keep.sum() == 2  # "happy" is one toy token, plus EOS
    want = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert torch.allclose(out.loss, want, atol=1e-6)


def test_batched_generation_equals_one_by_one(tiny_model, processor, tiny_config):
    subs = ["hi", "I really cannot believe what you just told me about the money", "so what"]
    media = random_media(tiny_config, 3, seed=7)
    batch = processor.collate([processor.encode(s, "emotion") for s in subs])
    batched = tiny_model.generate(**batch, **media, max_new_tokens=6, do_sample=False)
    for i, s in enumerate(subs):
        single = processor.collate([processor.encode(s, "emotion")])
        one = tiny_model.generate(
            **single, **{k: v[i : i + 1] for k, v in media.items()}, max_new_tokens=6, do_sample=False
        )
        assert batched[i].tolist() == one[0].tolist()


def test_generation_rejects_right_padding(tiny_model, processor, tiny_config):
    a, b = processor.encode("hi", "emotion"), processor.encode("a longer subtitle", "emotion")
    batch = processor.collate([a, b], padding_side="right")
    from emotion_llama.errors import EmotionLlamaError

    with pytest.raises(EmotionLlamaError, match="left padding"):
        tiny_model.generate(**batch, **random_media(tiny_config, 2), max_new_tokens=2)


def test_other_llm_family_projections_follow_hidden_size(tiny_config, toy_tok):
    from emotion_llama.model.processor import EmotionLlamaProcessor

    cfg = replace(
        tiny_config, llm=replace(tiny_config.llm, model_type="qwen2", hidden_size=48, num_kv_heads=2)
    )
    model = build_model(cfg)
    assert type(model.llm.get_base_model()).__name__ == "Qwen2ForCausalLM"
    assert model.llama_proj.out_features == 48 and model.cls_tk_llama_proj.out_features == 48
    proc = EmotionLlamaProcessor(toy_tok, cfg)
    batch = proc.collate(
        [proc.encode("hey", "emotion", answer="sad", layout="training")], padding_side="right"
    )
    out = model(**batch, **random_media(cfg, 1))
    assert out.features.shape == (1, 8, 48) and torch.isfinite(out.loss)
