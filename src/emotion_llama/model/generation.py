"""Batched answers from the model for clips given as (subtitle, frame, features)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emotion_llama.encoders.store import ClipFeatures
from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.prompts import clean_generation


@dataclass(frozen=True)
class ClipInput:
    subtitle: str
    frame: np.ndarray  # (H, W, 3) uint8 RGB
    features: ClipFeatures


class Generator:
    """Greedy (evaluation) or sampled generation for one task and instruction, in batches."""

    def __init__(
        self,
        model: EmotionLlama,
        processor: EmotionLlamaProcessor,
        *,
        task: str = "emotion",
        instruction: str | None = None,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.task = task
        self.instruction = instruction
        cfg = model.config
        self.max_new_tokens = max_new_tokens or cfg.prompt.max_eval_answer_tokens
        self.do_sample = do_sample
        self.device = next(p for p in model.parameters() if p.device.type != "meta").device

    def __call__(self, clips: Sequence[ClipInput]) -> list[str]:
        proc = self.processor
        batch = proc.collate(
            [proc.encode(c.subtitle, self.task, self.instruction) for c in clips], padding_side="left"
        )
        feats = {
            name: torch.from_numpy(np.stack([getattr(c.features, m) for c in clips]))
            for name, m in (
                ("local_feats", "local"),
                ("temporal_feats", "temporal"),
                ("audio_feats", "audio"),
            )
        }
        pixels = torch.stack([proc.preprocess_image(c.frame) for c in clips])
        inputs = {k: v.to(self.device) for k, v in {**batch, **feats, "pixel_values": pixels}.items()}
        gen = self.model.config.generation
        kwargs = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            kwargs.update(
                top_p=gen.top_p, temperature=gen.temperature, repetition_penalty=gen.repetition_penalty
            )
        ids = self.model.generate(**inputs, **kwargs)
        texts = proc.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [clean_generation(t) for t in texts]
