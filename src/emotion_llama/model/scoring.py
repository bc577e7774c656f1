"""Emotion labels by scoring the candidate answers, without a decoding loop.

The model was trained to answer the emotion prompt with the label word and then ``</s>``: the
answer ids are exactly ``processor.encode(..., answer=label)``'s, i.e. the label tokenised alone
without special tokens (for LLaMA tokenizers a leading ``▁``), then the end-of-sequence id. So
instead of decoding, one forward pass over the prompt gives the next-token distribution, and each
candidate label is scored by the log-probability of its answer tokens.

What is scored (``span``):

``"decision"`` (default)
    For each label, its answer tokens ``label + </s>`` up to and including the first token that no
    other candidate has at that place: the shortest prefix that tells it apart. When every label
    starts with its own token (the nine labels do with the toy tokenizer; ``LabelScorer.extended``
    lists the labels that need more for a given tokenizer) that is the first token alone, and
    scoring is one forward pass, the same one greedy decoding starts with, so the best label is
    greedy's first step restricted to the labels.
    When labels share leading tokens ("sad" / "sadly", or multi-token words), the shared tokens and
    the one that separates them are scored, exactly; a label that is a whole prefix of another
    ("sad" / "sadness") is separated by ``</s>``. The events "the answer starts with this prefix"
    are disjoint, so the scores are exact log-probabilities of mutually exclusive answers.

``"full"``
    The whole answer ``label + </s>``: the exact log-likelihood of answering exactly that label
    (the training target). Every label then needs the extra forward.

Tokens beyond the first one run in one extra forward over the candidates' continuation tokens
that reuses the prompt's KV cache, copied per (clip, candidate) row, in chunks of at most
``max_rows`` rows. ``LabelScores.scores`` are the softmax of the log-probabilities over the
candidates: the model's distribution restricted to the label set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.generation import ClipInput, build_inputs, model_device
from emotion_llama.model.modeling import EmotionLlama, position_ids_from_mask
from emotion_llama.model.processor import IGNORE_INDEX, EmotionLlamaProcessor
from emotion_llama.prompts import LABELS

Span = Literal["decision", "full"]


@dataclass(frozen=True)
class LabelScores:
    """One clip's result: the best label, the probabilities over the candidates (summing to 1)
    and the raw log-probabilities of the scored answer tokens."""

    label: str
    scores: dict[str, float]
    logprobs: dict[str, float]


def answer_ids(processor: EmotionLlamaProcessor, label: str) -> list[int]:
    """The ids the model was trained to answer ``label`` with (normalised target, then EOS)."""
    labels = processor.encode("", "emotion", "", answer=label).labels or []
    return [t for t in labels if t != IGNORE_INDEX]


def scored_spans(answers: Sequence[Sequence[int]], span: Span = "decision") -> list[tuple[int, ...]]:
    """The token ids scored per candidate (see the module docstring). ``answers`` each end with
    the end-of-answer id, so no answer is a proper prefix of another."""
    seqs = [tuple(a) for a in answers]
    if len(set(seqs)) != len(seqs):
        raise EmotionLlamaError("two candidate labels have the same answer tokens")
    if span == "full":
        return seqs
    if span != "decision":
        raise EmotionLlamaError(f"span must be 'decision' or 'full', not {span!r}")
    out = []
    for i, s in enumerate(seqs):
        others = [o for j, o in enumerate(seqs) if j != i]
        k = next(
            (k for k in range(1, len(s) + 1) if all(o[:k] != s[:k] for o in others)),
            None,
        )
        if k is None:  # only when an answer is a prefix of another: they all end with EOS
            raise EmotionLlamaError(f"candidate {i} cannot be told apart from the others")
        out.append(s[:k])
    return out


class LabelScorer:
    """Scores of the emotion-prompt answers ``labels`` for batches of clips.

    ``scorer(clips)`` -> one :class:`LabelScores` per clip; ``scorer.log_likelihoods(inputs)``
    does the model work on inputs from :func:`~emotion_llama.model.generation.build_inputs` and
    returns a (B, K) tensor of log-probabilities in the order of ``labels``.
    """

    def __init__(
        self,
        model: EmotionLlama,
        processor: EmotionLlamaProcessor,
        labels: Sequence[str] = LABELS,
        instruction: str | None = None,
        *,
        span: Span = "decision",
        max_rows: int = 64,
    ) -> None:
        if len(labels) < 1:
            raise EmotionLlamaError("no candidate labels")
        if len(set(labels)) != len(labels):
            raise EmotionLlamaError(f"duplicate candidate labels: {list(labels)}")
        if max_rows < 1:
            raise EmotionLlamaError(f"max_rows must be at least 1, got {max_rows}")
        self.model = model.eval()
        self.processor = processor
        self.labels = tuple(labels)
        self.instruction = instruction
        self.span = span
        self.max_rows = max_rows
        self.device = model_device(model)
        self.answers = [answer_ids(processor, lab) for lab in self.labels]
        self.spans = scored_spans(self.answers, span)
        self.first_ids = torch.tensor([s[0] for s in self.spans], device=self.device)
        #: Candidates with more than one scored token, i.e. those that need the extra forward.
        self.extended = [k for k, s in enumerate(self.spans) if len(s) > 1]
        self._llm: Callable[..., Any] = model.llm

    def compile(self, **compile_kwargs: Any) -> LabelScorer:
        """Run the LLM forwards of scoring through ``torch.compile`` (dynamic shapes by default);
        the model itself, and so generation, is left as it is."""
        compile_kwargs.setdefault("dynamic", True)
        self._llm = torch.compile(self.model.llm, **compile_kwargs)
        return self

    def build(self, clips: Sequence[ClipInput]) -> dict[str, torch.Tensor]:
        return build_inputs(
            self.processor, clips, task="emotion", instruction=self.instruction, device=self.device
        )

    def __call__(self, clips: Sequence[ClipInput]) -> list[LabelScores]:
        logp = self.log_likelihoods(self.build(clips)).float().cpu()
        probs = torch.softmax(logp, dim=-1)
        out = []
        for row_lp, row_p in zip(logp.tolist(), probs.tolist(), strict=True):
            best = max(range(len(self.labels)), key=row_lp.__getitem__)
            out.append(
                LabelScores(
                    label=self.labels[best],
                    scores=dict(zip(self.labels, row_p, strict=True)),
                    logprobs=dict(zip(self.labels, row_lp, strict=True)),
                )
            )
        return out

    @torch.no_grad()
    def log_likelihoods(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, K) float32 log-probabilities of the scored answer tokens of each label."""
        mask = inputs["attention_mask"]
        if bool((mask[:, -1] == 0).any()):
            raise EmotionLlamaError("scoring needs left padding (collate with padding_side='left')")
        embeds, _ = self.model.prompt_embeds(**{k: v for k, v in inputs.items() if k != "labels"})
        need_cache = bool(self.extended)
        out = self._llm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=need_cache,
            logits_to_keep=1,
        )
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V)
        scores = first[:, self.first_ids]  # (B, K)
        if need_cache:
            scores = scores.clone()
            self._extend(scores, out.past_key_values, mask)
        return scores

    def _extend(self, scores: torch.Tensor, cache: Any, mask: torch.Tensor) -> None:
        """Add the log-probabilities of the 2nd.. scored tokens of the extended candidates, one
        row per (clip, candidate), feeding tokens 1..n-1 after a copy of the prompt's cache."""
        from transformers import DynamicCache

        b = mask.shape[0]
        lengths = mask.long().sum(dim=1)  # real prompt tokens per clip
        per_chunk = max(1, self.max_rows // b)
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        for start in range(0, len(self.extended), per_chunk):
            cands = self.extended[start : start + per_chunk]
            n = len(cands)
            width = max(len(self.spans[k]) - 1 for k in cands)
            ids = torch.full((n, width), self.processor.pad_id, dtype=torch.long)
            targets = torch.zeros((n, width), dtype=torch.long)
            real = torch.zeros((n, width), dtype=torch.bool)
            for i, k in enumerate(cands):
                s = self.spans[k]
                ids[i, : len(s) - 1] = torch.tensor(s[:-1])
                targets[i, : len(s) - 1] = torch.tensor(s[1:])
                real[i, : len(s) - 1] = True
            dev = self.device
            # Rows in (clip, candidate) order: clip index = row // n.
            rows = torch.arange(b, device=dev).repeat_interleave(n)
            row_ids = ids.to(dev).repeat(b, 1)
            row_real = real.to(dev).repeat(b, 1)
            row_cache = DynamicCache(
                ddp_cache_data=[(k.index_select(0, rows), v.index_select(0, rows)) for k, v in layers],
                config=self.model.llm.config,
            )
            out = self._llm(
                input_ids=row_ids,
                attention_mask=torch.cat([mask.index_select(0, rows), row_real.long()], dim=1),
                position_ids=lengths.index_select(0, rows)[:, None] + torch.arange(width, device=dev),
                past_key_values=row_cache,
                use_cache=True,
            )
            logp = torch.log_softmax(out.logits.float(), dim=-1)  # (b * n, width, V)
            picked = logp.gather(-1, targets.to(dev).repeat(b, 1)[..., None])[..., 0]
            added = (picked * row_real).sum(dim=1).view(b, n)
            scores[:, cands] += added
            del row_cache, out, logp
