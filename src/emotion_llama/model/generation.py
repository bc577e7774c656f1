"""Batched answers from the model for clips given as (subtitle, frame or cached ViT output, features)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emotion_llama.encoders.store import ClipFeatures
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.inputs import MultimodalInputs
from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.model.tokenizer import batch_decode
from emotion_llama.prompts import clean_generation, default_instruction


@dataclass(frozen=True)
class ClipInput:
    """One clip to answer. ``frame`` is the (H, W, 3) uint8 RGB frame the global encoder reads;
    ``vision_tokens`` is that encoder's output (1 + N, Dv) when it was computed before (a cache of
    ViT outputs), in which case the frame is not needed and the ViT does not run."""

    subtitle: str
    frame: np.ndarray | None
    features: ClipFeatures
    vision_tokens: np.ndarray | torch.Tensor | None = None
    #: Feature parts not fed (:mod:`emotion_llama.modalities`: frame, face, motion, audio): they get
    #: no positions in the prompt. An absent text is an empty ``subtitle``.
    absent: frozenset[str] = frozenset()


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first materialised parameter."""
    return next(p for p in model.parameters() if p.device.type != "meta").device


def build_inputs(
    processor: EmotionLlamaProcessor,
    clips: Sequence[ClipInput],
    *,
    task: str = "emotion",
    instruction: str | None = None,
    device: torch.device | str = "cpu",
) -> MultimodalInputs:
    """The inputs of :meth:`EmotionLlama.generate` (and of the model's forward) for a left-padded
    batch of prompts: ids, masks, the three feature vectors, and either ``pixel_values`` or,
    when every clip carries them, ``vision_tokens``. ``instruction`` ``None``: the task's first
    instruction (:func:`~emotion_llama.prompts.default_instruction`), for every clip and call:
    an answer must not depend on a random draw (training draws from the pool; inference never)."""
    if not clips:
        raise EmotionLlamaError("no clips given")
    if instruction is None:
        instruction = default_instruction(task)
    samples = [processor.encode(c.subtitle, task, instruction, absent=c.absent) for c in clips]
    if all(c.vision_tokens is not None for c in clips):
        vision = [{"vision_tokens": c.vision_tokens} for c in clips]
    elif all(c.frame is not None for c in clips):
        vision = [{"pixel_values": processor.preprocess_image(c.frame)} for c in clips]
    else:
        missing = [i for i, c in enumerate(clips) if c.frame is None and c.vision_tokens is None]
        raise EmotionLlamaError(
            f"clips {missing} have neither a frame nor vision_tokens"
            if missing
            else "a batch must give vision_tokens for every clip or a frame for every clip, not a mix"
        )
    media = [
        {
            "local_feats": c.features.local,
            "temporal_feats": c.features.temporal,
            "audio_feats": c.features.audio,
            **v,
        }
        for c, v in zip(clips, vision, strict=True)
    ]
    return processor.batch(samples, media, padding_side="left").to(device)


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
        generate_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """``generate_kwargs`` go to Hugging Face ``generate`` as they are, e.g.
        ``{"cache_implementation": "static"}`` for a preallocated KV cache (transformers then
        compiles the decoding step on a GPU: CUDA graphs, no per-token Python overhead)."""
        self.model = model.eval()
        self.processor = processor
        self.task = task
        self.instruction = instruction
        cfg = model.config
        self.max_new_tokens = max_new_tokens or cfg.prompt.max_eval_answer_tokens
        self.do_sample = do_sample
        self.generate_kwargs = dict(generate_kwargs or {})
        self.device = model_device(model)

    def __call__(self, clips: Sequence[ClipInput]) -> list[str]:
        inputs = build_inputs(
            self.processor, clips, task=self.task, instruction=self.instruction, device=self.device
        )
        gen = self.model.config.generation
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            **self.generate_kwargs,
        }
        if self.do_sample:
            kwargs.update(
                top_p=gen.top_p, temperature=gen.temperature, repetition_penalty=gen.repetition_penalty
            )
        ids = self.model.generate(**inputs.as_kwargs(), **kwargs)
        texts = batch_decode(self.processor.tokenizer, ids)
        return [clean_generation(t) for t in texts]
