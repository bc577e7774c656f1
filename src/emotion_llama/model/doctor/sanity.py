"""The sanity prompt: a short greedy answer on seeded media, checked for prompt repetition."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from emotion_llama.config import EmotionLlamaConfig
from emotion_llama.model.doctor.findings import SANITY_SUBTITLE, Finding
from emotion_llama.prompts import EMOTION_INSTRUCTION, user_text

# -- the sanity prompt ------------------------------------------------------------------------------
_MARKERS = (
    "[INST]",
    "[/INST]",
    "<VideoHere>",
    "<FeatureHere>",
    "<video>",
    "</video>",
    "<feature>",
    "</feature>",
    "[emotion]",
    "[reason]",
    "[reason_v2]",
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def _longest_common_run(a: Sequence[str], b: Sequence[str]) -> list[str]:
    best, end = 0, 0
    prev = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        cur = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best, end = cur[j], i
        prev = cur
    return list(a[end - best : end])


def find_prompt_repetition(answer: str, prompt: str, subtitle: str = "", *, min_words: int = 6) -> str | None:
    """Why ``answer`` repeats the prompt, or ``None``: it holds the template's markers
    (``[INST]``, ``<VideoHere>``...), the whole subtitle (of 3 words or more), or a run of at least
    ``min_words`` consecutive words of ``prompt`` (case and punctuation ignored)."""
    low = answer.lower()
    for marker in _MARKERS:
        if marker.lower() in low:
            return f"the answer contains the prompt's {marker}"
    words = _WORD.findall(low)
    if not words:
        return None
    said = _WORD.findall(subtitle.lower())
    if len(said) >= 3 and len(_longest_common_run(words, said)) == len(said):
        return f"the answer repeats the subtitle ({subtitle.strip()!r})"
    run = _longest_common_run(words, _WORD.findall(prompt.lower()))
    if len(run) >= min_words:
        return f"the answer repeats {len(run)} words of the prompt: {' '.join(run)!r}"
    return None


@dataclass(frozen=True)
class SanityResult:
    ran: bool
    #: What was run, or why not.
    message: str
    #: ``True`` when it was meant to run but could not (an error), not skipped by choice.
    failed: bool = False
    task: str = "emotion"
    prompt: str = ""
    answer: str = ""
    repetition: str | None = None
    seed: int = 0
    max_new_tokens: int = 0
    media: str = ""


def seeded_media(config: EmotionLlamaConfig, seed: int) -> dict[str, torch.Tensor]:
    """Fixed random media for one clip: the ViT output tokens (1 + N, Dv) and the three features,
    drawn from N(0, 1) with a seeded generator (the ViT does not run, so no EVA weights are needed)."""
    g = torch.Generator().manual_seed(seed)
    v, f = config.vision, config.features
    return {
        "vision_tokens": torch.randn(1 + v.num_patches, v.hidden_size, generator=g),
        "local_feats": torch.randn(f.local_dim, generator=g),
        "temporal_feats": torch.randn(f.temporal_dim, generator=g),
        "audio_feats": torch.randn(f.audio_dim, generator=g),
    }


def run_sanity_prompt(
    model: Any,
    tokenizer: Any,
    *,
    seed: int = 0,
    max_new_tokens: int = 16,
    subtitle: str = SANITY_SUBTITLE,
) -> SanityResult:
    """A short greedy answer to the emotion prompt on :func:`seeded_media`, checked with
    :func:`find_prompt_repetition`."""
    from emotion_llama.model.generation import model_device
    from emotion_llama.model.processor import EmotionLlamaProcessor
    from emotion_llama.model.tokenizer import decode

    config = model.config
    processor = EmotionLlamaProcessor(tokenizer, config)
    sample = processor.encode(subtitle, "emotion", EMOTION_INSTRUCTION)
    inputs = processor.batch([sample], [seeded_media(config, seed)], padding_side="left")
    device = model_device(model)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    inputs = inputs.to(device)
    ids = model.eval().generate(**inputs.as_kwargs(), max_new_tokens=max_new_tokens, do_sample=False)
    answer = decode(tokenizer, ids[0]).strip()
    prompt = user_text(subtitle, "emotion", EMOTION_INSTRUCTION)
    return SanityResult(
        ran=True,
        message=f"greedy, {max_new_tokens} new tokens at most, the emotion prompt, on {device} ({dtype})",
        prompt=sample.text,
        answer=answer,
        repetition=find_prompt_repetition(answer, prompt, subtitle),
        seed=seed,
        max_new_tokens=max_new_tokens,
        media=f"fixed random media, seed {seed}: ViT output tokens and the three features drawn from "
        "N(0, 1) (no video is read and the ViT does not run), so the label says nothing about accuracy",
    )


def sanity_findings(s: SanityResult) -> list[Finding]:
    if not s.ran:
        return [Finding("sanity prompt", "warn" if s.failed else "note", s.message)]
    if s.repetition:
        return [
            Finding(
                "sanity prompt",
                "problem",
                f"{s.repetition}: the symptom of missing adapters or projections, the wrong file, or a "
                "base (non-chat) LLM",
            )
        ]
    return [Finding("sanity prompt", "ok", f"answered {s.answer!r} without repeating the prompt")]
