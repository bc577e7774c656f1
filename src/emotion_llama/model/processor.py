"""Text and pixels in, tensors out. The processor does no model work; the model does no text work.

For each sample it renders the prompt of SPEC 2.3 (see :func:`emotion_llama.prompts.prompt_segments`),
tokenises the text pieces, expands every feature slot into as many placeholder positions as
there are feature vectors, and marks those positions in ``feature_mask``. The model later
writes the projected features into exactly those positions.

:meth:`EmotionLlamaProcessor.batch` is the one call that assembles everything the model takes
(padded ids and masks, stacked frames and features) as a
:class:`~emotion_llama.model.inputs.MultimodalInputs`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.modalities import feature_keep
from emotion_llama.model.inputs import MultimodalInputs, stack_media
from emotion_llama.prompts import (
    Bos,
    Slot,
    Text,
    normalize_target,
    pick_instruction,
    prompt_segments,
    user_text,
)

IGNORE_INDEX = -100


@dataclass
class EncodedSample:
    """One sample's ids before padding. ``labels`` is ``None`` for a prompt without answer."""

    input_ids: list[int]
    feature_mask: list[bool]
    labels: list[int] | None = None
    #: The rendered prompt, for logs and debugging.
    text: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


class EmotionLlamaProcessor:
    def __init__(self, tokenizer: Any, config: EmotionLlamaConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.bos_id: int | None = tokenizer.bos_token_id
        self.eos_id: int | None = tokenizer.eos_token_id
        if self.eos_id is None:
            raise EmotionLlamaError("the tokenizer has no end-of-sequence token")
        pad = config.prompt.pad_token
        pad_id = tokenizer.convert_tokens_to_ids(pad)
        if pad_id is None or (pad_id == tokenizer.unk_token_id and pad != tokenizer.unk_token):
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.pad_id: int = int(pad_id)
        self.num_groups = config.vision.num_groups
        self.num_features = config.num_multimodal_tokens

    # -- text ----------------------------------------------------------------------------------
    def _encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(
        self,
        subtitle: str,
        task: str = "emotion",
        instruction: str | None = None,
        answer: str | None = None,
        *,
        layout: str | None = None,
        normalize: bool = True,
        rng: random.Random | None = None,
        absent: Iterable[str] = (),
    ) -> EncodedSample:
        """Ids of one prompt (and of its answer when ``answer`` is given, with labels).

        ``answer`` is normalised as the authors' targets were (``normalize=False`` keeps it).
        ``absent`` feature parts (:mod:`emotion_llama.modalities`: frame, face, motion, audio) get
        no positions at all: the prompt is shorter by their vectors and ``extras["feature_keep"]``
        says which of the model's vectors are fed.
        """
        keep = feature_keep(self.num_groups, absent)
        layout = layout or self.config.prompt.layout
        instruction = instruction if instruction is not None else pick_instruction(task, rng)
        segments = prompt_segments(
            user_text(subtitle, task, instruction),
            layout,
            self.num_groups,
            self.config.prompt.template,
        )
        ids: list[int] = []
        mask: list[bool] = []
        rendered: list[str] = []
        next_feature = 0
        for seg in segments:
            if isinstance(seg, Bos):
                if self.bos_id is not None:  # tokenizers without BOS (Qwen2...) skip it
                    ids.append(self.bos_id)
                    mask.append(False)
                rendered.append("<s>")
            elif isinstance(seg, Text):
                piece = self._encode_text(seg.text)
                ids.extend(piece)
                mask.extend([False] * len(piece))
                rendered.append(seg.text)
            elif isinstance(seg, Slot):
                if seg.start != next_feature:
                    raise EmotionLlamaError("feature slots must appear in feature order")
                next_feature += seg.count
                fed = sum(keep[seg.start : seg.start + seg.count])
                ids.extend([self.pad_id] * fed)
                mask.extend([True] * fed)
                rendered.append(
                    f"<feat:{seg.start}+{seg.count}>"
                    if fed == seg.count
                    else f"<feat:{fed} of {seg.start}+{seg.count}>"
                )
        if next_feature != self.num_features:
            raise EmotionLlamaError(
                f"the prompt has {next_feature} feature positions, the model makes {self.num_features}"
            )
        labels: list[int] | None = None
        if answer is not None:
            target = normalize_target(answer, self.config.prompt.max_target_words) if normalize else answer
            answer_ids = self._encode_text(target)[: self.config.prompt.max_answer_tokens - 1]
            answer_ids.append(self.eos_id)
            labels = [IGNORE_INDEX] * len(ids) + answer_ids
            ids = ids + answer_ids
            mask = mask + [False] * len(answer_ids)
            rendered.append(target + "</s>")
        limit = self.config.prompt.max_context_tokens
        if len(ids) > limit:
            raise EmotionLlamaError(
                f"sequence of {len(ids)} tokens is longer than prompt.max_context_tokens={limit}; "
                "shorten the subtitle or the answer"
            )
        extras: dict[str, Any] = {} if all(keep) else {"feature_keep": keep}
        return EncodedSample(ids, mask, labels, "".join(rendered), extras)

    # -- batching ------------------------------------------------------------------------------
    def collate(
        self, samples: list[EncodedSample], padding_side: str | None = None
    ) -> dict[str, torch.Tensor]:
        """Pad a batch. Default side: left for the inference layout (generation), right for the
        training layout (as the authors' training code). Pad positions are masked out of
        attention and loss; the model gives them zero embeddings."""
        if not samples:
            raise EmotionLlamaError("cannot collate an empty batch")
        side = padding_side or ("left" if self.config.prompt.layout == "inference" else "right")
        if side not in ("left", "right"):
            raise EmotionLlamaError(f"padding_side must be 'left' or 'right', not {side!r}")
        width = max(len(s.input_ids) for s in samples)
        n = len(samples)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        fmask = torch.zeros((n, width), dtype=torch.bool)
        with_labels = all(s.labels is not None for s in samples)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long) if with_labels else None
        for i, s in enumerate(samples):
            k = len(s.input_ids)
            sl = slice(width - k, width) if side == "left" else slice(0, k)
            input_ids[i, sl] = torch.tensor(s.input_ids, dtype=torch.long)
            attention[i, sl] = 1
            fmask[i, sl] = torch.tensor(s.feature_mask, dtype=torch.bool)
            if labels is not None:
                labels[i, sl] = torch.tensor(s.labels, dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention, "feature_mask": fmask}
        if labels is not None:
            batch["labels"] = labels
        if any("feature_keep" in s.extras for s in samples):  # some sample lacks a part
            everything = [True] * self.num_features
            batch["feature_keep"] = torch.tensor(
                [s.extras.get("feature_keep", everything) for s in samples], dtype=torch.bool
            )
        return batch

    def batch(
        self,
        samples: Sequence[EncodedSample],
        media: Sequence[Mapping[str, Any]],
        *,
        padding_side: str | None = None,
    ) -> MultimodalInputs:
        """Everything the model takes for a batch: ``samples`` padded as by :meth:`collate` and
        each clip's ``media`` (``local_feats``, ``temporal_feats``, ``audio_feats`` and
        ``vision_tokens`` or ``pixel_values``, per clip; see
        :func:`~emotion_llama.model.inputs.stack_media`) stacked."""
        if len(media) != len(samples):
            raise EmotionLlamaError(f"{len(samples)} prompts but media for {len(media)} clips")
        return MultimodalInputs(**self.collate(list(samples), padding_side), **stack_media(media))

    # -- pixels --------------------------------------------------------------------------------
    def preprocess_image(self, image: Any) -> torch.Tensor:
        """One RGB frame (PIL image or HxWx3 uint8 array) -> (3, S, S) float tensor: bicubic
        resize to S = ``vision.image_size`` without keeping the aspect ratio, no crop, CLIP
        normalisation."""
        from PIL import Image

        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise EmotionLlamaError(f"expected an HxWx3 RGB frame, got shape {image.shape}")
            image = Image.fromarray(image.astype(np.uint8), mode="RGB")
        elif not isinstance(image, Image.Image):
            raise EmotionLlamaError(f"expected a PIL image or an array, got {type(image).__name__}")
        size = self.config.vision.image_size
        image = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        arr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.config.vision.mean).view(3, 1, 1)
        std = torch.tensor(self.config.vision.std).view(3, 1, 1)
        return (arr - mean) / std
