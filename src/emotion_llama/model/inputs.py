"""What :class:`~emotion_llama.model.modeling.EmotionLlama` takes, as one typed value.

:meth:`EmotionLlamaProcessor.batch <emotion_llama.model.processor.EmotionLlamaProcessor.batch>`
makes a :class:`MultimodalInputs` from encoded prompts and each clip's media; the model takes it
by keyword, ``model(**inputs.as_kwargs())`` (or ``model.generate(inputs, ...)``). It is also a
read-only mapping of its tensors (``inputs["labels"]``, ``"vision_tokens" in inputs``,
``model(**inputs)``), so code written for the plain dicts of before keeps working.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from emotion_llama.errors import EmotionLlamaError

#: The three per-clip feature vectors, in the model's order.
FEATURE_KEYS = ("local_feats", "temporal_feats", "audio_feats")
#: The two forms of the frame: the global encoder's output (preferred when every clip has it)
#: or the preprocessed pixels it is computed from.
VISION_KEYS = ("vision_tokens", "pixel_values")


@dataclass(frozen=True, eq=False)
class MultimodalInputs(Mapping[str, torch.Tensor]):
    """A batch for ``EmotionLlama.forward`` / ``generate``: the fields are their arguments, in the
    order of their signature. Exactly one of ``pixel_values`` (B, 3, S, S) and ``vision_tokens``
    (B, 1 + N, Dv) is normally set; ``labels`` only for training and validation."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    feature_mask: torch.Tensor  # (B, L), true where the F multimodal vectors go
    local_feats: torch.Tensor  # (B, D_local)
    temporal_feats: torch.Tensor  # (B, D_temporal)
    audio_feats: torch.Tensor  # (B, D_audio)
    pixel_values: torch.Tensor | None = None
    vision_tokens: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # (B, L), -100 outside the answer
    #: (B, F) bool, which of the model's F vectors each prompt has positions for; ``None``: all.
    #: False for the parts of an absent modality (:mod:`emotion_llama.modalities`).
    feature_keep: torch.Tensor | None = None

    #: The field names, in order (the positional order of ``forward``); set below the class.
    FIELDS: ClassVar[tuple[str, ...]] = ()

    # -- the keyword arguments -------------------------------------------------------------------
    def as_kwargs(self) -> dict[str, torch.Tensor]:
        """The set fields by name: ``model(**inputs.as_kwargs())``."""
        return {k: v for k in self.FIELDS if (v := getattr(self, k)) is not None}

    def media(self) -> dict[str, torch.Tensor | None]:
        """The keyword arguments of ``EmotionLlama.encode``: the frame (either form) and features."""
        return {k: getattr(self, k) for k in ("pixel_values", "vision_tokens", *FEATURE_KEYS)}

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> MultimodalInputs:
        return dataclasses.replace(
            self, **{k: v.to(device, non_blocking=non_blocking) for k, v in self.as_kwargs().items()}
        )

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    @classmethod
    def from_call(
        cls, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[MultimodalInputs, dict[str, Any]]:
        """Split a call's arguments into the inputs and the rest: either one ``MultimodalInputs``
        first, or the fields positionally (in order) and/or by name. Returns the inputs and the
        keyword arguments that are no field."""
        rest = {k: v for k, v in kwargs.items() if k not in cls.FIELDS}
        named = {k: v for k, v in kwargs.items() if k in cls.FIELDS}
        if args and isinstance(args[0], MultimodalInputs):
            if len(args) > 1 or named:
                raise TypeError("give the inputs either as MultimodalInputs or as tensors, not both")
            return args[0], rest
        if len(args) > len(cls.FIELDS):
            raise TypeError(f"at most {len(cls.FIELDS)} positional inputs, got {len(args)}")
        positional = dict(zip(cls.FIELDS, args, strict=False))
        twice = sorted(set(positional) & set(named))
        if twice:
            raise TypeError(f"inputs given twice: {', '.join(twice)}")
        return cls(**positional, **named), rest

    # -- read-only mapping (compatibility with the dicts of before) ------------------------------
    def __getitem__(self, key: str) -> torch.Tensor:
        value = getattr(self, key, None) if key in self.FIELDS else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_kwargs())

    def __len__(self) -> int:
        return len(self.as_kwargs())


MultimodalInputs.FIELDS = tuple(f.name for f in dataclasses.fields(MultimodalInputs))


def _stack(values: Sequence[Any]) -> torch.Tensor:
    if all(isinstance(v, np.ndarray) for v in values):
        return torch.from_numpy(np.stack(values))
    return torch.stack([torch.as_tensor(v) for v in values])


def stack_media(media: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Each clip's media (``local_feats``, ``temporal_feats``, ``audio_feats`` and
    ``vision_tokens`` or ``pixel_values``; tensors or arrays, other keys ignored) stacked into
    batch tensors. The frame form is the one every clip carries, ``vision_tokens`` first."""
    if not media:
        raise EmotionLlamaError("no clips given")
    vision = next((k for k in VISION_KEYS if all(m.get(k) is not None for m in media)), None)
    if vision is None:
        raise EmotionLlamaError(
            "a batch must give vision_tokens for every clip or pixel_values for every clip, not a mix"
        )
    out = {k: _stack([m[k] for m in media]) for k in FEATURE_KEYS}
    out[vision] = _stack([m[vision] for m in media])
    return out
