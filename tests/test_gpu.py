"""Checks that need a CUDA device (skipped elsewhere)."""

import pytest
import torch

from helpers import random_media

pytestmark = pytest.mark.gpu


def test_tiny_model_on_cuda_matches_cpu(tiny_config, processor):
    from emotion_llama.model.builder import build_model

    cpu = build_model(tiny_config).eval()
    gpu = build_model(tiny_config, device="cuda")
    gpu.load_state_dict(cpu.state_dict())
    gpu.eval()
    batch = processor.collate(
        [processor.encode("hello", "emotion"), processor.encode("a longer subtitle", "emotion")]
    )
    media = random_media(tiny_config, 2)
    with torch.no_grad():
        a = cpu(**batch, **media).logits
        b = gpu(**{k: v.cuda() for k, v in batch.items()}, **{k: v.cuda() for k, v in media.items()}).logits
    assert torch.allclose(a, b.cpu(), atol=1e-3, rtol=1e-3)


def test_paper_preset_builds_on_cuda_with_exact_trainable_count():
    from dataclasses import replace

    from emotion_llama.config import paper_config
    from emotion_llama.model.builder import build_model, parameter_counts

    cfg = paper_config()
    cfg = replace(cfg, llm=replace(cfg.llm, name_or_path=None), vision=replace(cfg.vision, weights=None))
    model = build_model(cfg, device="cuda", dtype=torch.bfloat16)
    assert parameter_counts(model)["trainable_parameters"] == 74_993_664
    assert next(model.parameters()).is_cuda
    del model
    torch.cuda.empty_cache()
