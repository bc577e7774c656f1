"""The Emotion-LLaMA forward pass, in one file.

Shapes (paper sizes in brackets): B batch, L sequence length, G = number of EVA groups [256],
Dv ViT width [1408], H LLM hidden size [4096], F = G + 4 multimodal vectors [260].

    frame (B, 3, 448, 448)
      -> GlobalEncoder: EVA ViT-g (no final norm) -> ln_vision        (B, 1 + 1024, Dv)
      -> CLS (B, Dv)  and  patches (B, 1024, Dv) -> groups of 4 consecutive patches of a row
                                                                     (B, G, 4 * Dv)
    projections (plain Linear with bias):
      llama_proj(groups) (B, G, H) | feats_llama_proj1(local) (B, 1, H)
      | feats_llama_proj2(temporal) (B, 1, H) | feats_llama_proj3(audio) (B, 1, H)
      | cls_tk_llama_proj(CLS) (B, 1, H)                     -> features (B, F, H)
    token embeddings of the prompt (B, L, H); features written at ``feature_mask`` positions
      -> LLM (frozen, LoRA on q_proj/v_proj) -> logits (B, L, V); loss on answer tokens only.

The attribute names of the projections are the authors' checkpoint key names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from emotion_llama.config import EmotionLlamaConfig, VisionConfig
from emotion_llama.errors import EmotionLlamaError, FeatureCountError
from emotion_llama.model.inputs import MultimodalInputs


class GlobalEncoder(nn.Module):
    """EVA ViT-g/14 as in BLIP-2, read through transformers' ``Blip2VisionModel``, followed by
    a separate frozen ``ln_vision``. The authors' ViT has no final norm: ``post_layernorm`` is
    replaced by the identity, and ``ln_vision`` (a fresh LayerNorm, weight 1, bias 0, eps 1e-5,
    in no checkpoint) normalises its output instead."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        from transformers import Blip2VisionConfig, Blip2VisionModel

        self.cfg = cfg
        self.vit = Blip2VisionModel(
            Blip2VisionConfig(
                hidden_size=cfg.hidden_size,
                intermediate_size=cfg.intermediate_size,
                num_hidden_layers=cfg.num_layers,
                num_attention_heads=cfg.num_heads,
                patch_size=cfg.patch_size,
                image_size=cfg.image_size,
                layer_norm_eps=cfg.layer_norm_eps,
                qkv_bias=True,
                hidden_act="gelu",
            )
        )
        self.vit.post_layernorm = nn.Identity()
        self.ln_vision = nn.LayerNorm(cfg.hidden_size, eps=cfg.ln_vision_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 1 + N, Dv): CLS then the N patch tokens in raster order."""
        dtype = self.vit.embeddings.patch_embedding.weight.dtype
        tokens = self.vit(pixel_values=pixel_values.to(dtype)).last_hidden_state
        return self.ln_vision(tokens)


def group_patches(patches: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B, N, D) -> (B, N / g, g * D): each group is g consecutive patches in raster order (of one
    row when g divides the grid width), concatenated along the feature axis; not a 2x2 block."""
    b, n, d = patches.shape
    if n % group_size:
        raise EmotionLlamaError(f"{n} patch tokens cannot be grouped by {group_size}")
    return patches.reshape(b, n // group_size, group_size * d)


@dataclass
class EmotionLlamaOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor
    #: The projected multimodal vectors (B, F, H), for inspection and tests.
    features: torch.Tensor


class EmotionLlama(nn.Module):
    """Frozen encoders + trainable projections + frozen LLM with trainable LoRA adapters.

    ``llm`` is a PEFT-wrapped Hugging Face causal LM (see :mod:`emotion_llama.model.builder`).
    """

    def __init__(self, config: EmotionLlamaConfig, global_encoder: GlobalEncoder, llm: Any) -> None:
        super().__init__()
        self.config = config
        hidden = _llm_hidden_size(llm)
        v, f = config.vision, config.features
        self.global_encoder = global_encoder
        self.llama_proj = nn.Linear(v.grouped_dim, hidden)
        self.feats_llama_proj1 = nn.Linear(f.local_dim, hidden)
        self.feats_llama_proj2 = nn.Linear(f.temporal_dim, hidden)
        self.feats_llama_proj3 = nn.Linear(f.audio_dim, hidden)
        self.cls_tk_llama_proj = nn.Linear(v.hidden_size, hidden)
        self.llm = llm

    # -- features ------------------------------------------------------------------------------
    def project_features(
        self,
        vision_tokens: torch.Tensor,
        local_feats: torch.Tensor,
        temporal_feats: torch.Tensor,
        audio_feats: torch.Tensor,
    ) -> torch.Tensor:
        """ViT output (B, 1 + N, Dv) and the three (B, D) features -> (B, G + 4, H) in the order
        [G EVA groups, local, temporal, audio, EVA CLS]."""
        b = vision_tokens.shape[0]
        for name, t in (("local", local_feats), ("temporal", temporal_feats), ("audio", audio_feats)):
            if t.dim() != 2 or t.shape[0] != b:
                raise EmotionLlamaError(f"{name} features must have shape (B={b}, D), got {tuple(t.shape)}")
        dtype = self.llama_proj.weight.dtype
        vision_tokens = vision_tokens.to(dtype)
        cls, patches = vision_tokens[:, 0], vision_tokens[:, 1:]
        groups = group_patches(patches, self.config.vision.group_size)  # (B, G, g*Dv)
        return torch.cat(
            [
                self.llama_proj(groups),  # (B, G, H)
                self.feats_llama_proj1(local_feats.to(dtype)).unsqueeze(1),  # (B, 1, H)
                self.feats_llama_proj2(temporal_feats.to(dtype)).unsqueeze(1),
                self.feats_llama_proj3(audio_feats.to(dtype)).unsqueeze(1),
                self.cls_tk_llama_proj(cls).unsqueeze(1),  # (B, 1, H)
            ],
            dim=1,
        )

    def encode(
        self,
        *,
        pixel_values: torch.Tensor | None = None,
        vision_tokens: torch.Tensor | None = None,
        local_feats: torch.Tensor,
        temporal_feats: torch.Tensor,
        audio_feats: torch.Tensor,
    ) -> torch.Tensor:
        """Run the global encoder (unless its output ``vision_tokens`` is given, e.g. cached)
        and the projections: -> (B, F, H)."""
        if vision_tokens is None:
            if pixel_values is None:
                raise EmotionLlamaError("give pixel_values or precomputed vision_tokens")
            with torch.no_grad():  # the ViT and ln_vision are frozen
                vision_tokens = self.global_encoder(pixel_values)
        return self.project_features(vision_tokens, local_feats, temporal_feats, audio_feats)

    # -- fusion --------------------------------------------------------------------------------
    def embed(
        self,
        input_ids: torch.Tensor,
        feature_mask: torch.Tensor,
        features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        feature_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings (B, L, H) with ``features`` (B, F, H) written, in order, at the
        positions where ``feature_mask`` is true; padded positions get zero embeddings. With
        ``feature_keep`` (B, F), only the kept vectors of each sample are written (an absent
        modality has no positions, so nothing stands in for it)."""
        embed_tokens = self.llm.get_input_embeddings()
        embeds = embed_tokens(input_ids)  # (B, L, H)
        per_sample = feature_mask.sum(dim=1)
        f = features.shape[1]
        if feature_keep is not None and tuple(feature_keep.shape) != tuple(features.shape[:2]):
            raise FeatureCountError(
                f"feature_keep has shape {tuple(feature_keep.shape)}, "
                f"the features {tuple(features.shape[:2])}"
            )
        want = feature_keep.sum(dim=1) if feature_keep is not None else torch.full_like(per_sample, f)
        if features.shape[0] != input_ids.shape[0] or bool((per_sample != want.to(per_sample.device)).any()):
            given = f"{features.shape[0]} x {f}" + (
                "" if feature_keep is None else f" (kept {want.tolist()})"
            )
            raise FeatureCountError(
                f"the prompts have {per_sample.tolist()} feature positions per sample but "
                f"{given} feature vectors were given; use the processor built for this model's config"
            )
        if feature_keep is not None:
            features = features[feature_keep.to(features.device)]  # (sum kept, H), sample by sample
        mask = feature_mask.unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(mask, features.to(embeds.dtype))
        if attention_mask is not None:
            embeds = embeds * attention_mask.unsqueeze(-1).to(embeds.dtype)
        return embeds

    def embed_inputs(self, inputs: MultimodalInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The LLM's input embeddings (B, L, H) and the projected features (B, F, H)."""
        features = self.encode(**inputs.media())
        embeds = self.embed(
            inputs.input_ids, inputs.feature_mask, features, inputs.attention_mask, inputs.feature_keep
        )
        return embeds, features

    def prompt_embeds(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`embed_inputs` for inputs given as the fields of :class:`MultimodalInputs`
        (positionally in its order, or by name) without ``labels``."""
        inputs, rest = MultimodalInputs.from_call(args, kwargs)
        if rest:
            raise TypeError(f"prompt_embeds got unexpected arguments: {', '.join(rest)}")
        return self.embed_inputs(inputs)

    # -- LLM -----------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        feature_mask: torch.Tensor,
        local_feats: torch.Tensor,
        temporal_feats: torch.Tensor,
        audio_feats: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        vision_tokens: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        feature_keep: torch.Tensor | None = None,
    ) -> EmotionLlamaOutput:
        """Logits (B, L, V); with ``labels`` (-100 outside the answer) the mean next-token loss.
        The arguments are the fields of :class:`MultimodalInputs`: ``model(**inputs.as_kwargs())``."""
        inputs = MultimodalInputs(
            input_ids=input_ids,
            attention_mask=attention_mask,
            feature_mask=feature_mask,
            local_feats=local_feats,
            temporal_feats=temporal_feats,
            audio_feats=audio_feats,
            pixel_values=pixel_values,
            vision_tokens=vision_tokens,
            labels=labels,
            feature_keep=feature_keep,
        )
        embeds, features = self.embed_inputs(inputs)
        out = self.llm(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            labels=labels,
            use_cache=False,
        )
        return EmotionLlamaOutput(loss=out.loss, logits=out.logits, features=features)

    @torch.no_grad()
    def generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """New token ids (B, T) for a left-padded batch: ``model.generate(inputs, **kw)`` with a
        :class:`MultimodalInputs`, or its fields as for :meth:`forward` (without ``labels``);
        the other keyword arguments go to Hugging Face ``generate`` (``max_new_tokens``,
        ``do_sample``...)."""
        inputs, generate_kwargs = MultimodalInputs.from_call(args, kwargs)
        attention_mask = inputs.attention_mask
        if bool((attention_mask[:, -1] == 0).any()):
            raise EmotionLlamaError("generation needs left padding (collate with padding_side='left')")
        embeds, _ = self.embed_inputs(inputs)
        generate_kwargs.setdefault("pad_token_id", self.llm.config.eos_token_id)
        return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded sample sees the same positions
    as when it is alone."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _llm_hidden_size(llm: Any) -> int:
    cfg = llm.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(text_cfg.hidden_size)
