"""``analyze``: one or more videos -> label, reasoning and clues, with everything loaded once.

Two kinds of model behind the same result:

- the clue pipeline (default, runs offline): perception -> AU-derived candidate labels, expression
  phrases, tone, transcript -> a local or remote instruct LLM names the label (unless the AU rules
  already do) and writes the reasoning;
- the full Emotion-LLaMA model (``model_dir``): the same perception feeds the four encoders and
  the multimodal LLM, which answers the emotion prompt (label) and a reasoning prompt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotion_llama.config import EmotionLlamaConfig, load_config


@dataclass
class Analysis:
    name: str
    label: str | None
    reasoning: str | None
    record: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    #: The AU timeline (for the PNG); not part of the JSON.
    timeline: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "reasoning": self.reasoning,
            "clues": self.record,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


class Analyzer:
    """Load once (perception models, the LLM or the Emotion-LLaMA model), analyse many clips."""

    def __init__(
        self,
        *,
        preset: str = "paper",
        model_dir: str | Path | None = None,
        llm: str = "offline",
        frame: str = "first",
        device: str = "cpu",
        cache: Path | None = None,
        vlm: str | None = None,
    ) -> None:
        from emotion_llama.perception.pipeline import Perceiver

        self.model_dir = Path(model_dir) if model_dir else None
        self.device = device
        self.model: Any = None
        if self.model_dir is not None:
            import torch

            from emotion_llama.encoders.models import build_encoders
            from emotion_llama.model.checkpoint import load_pretrained
            from emotion_llama.model.generation import Generator
            from emotion_llama.model.processor import EmotionLlamaProcessor
            from emotion_llama.model.tokenizer import load_tokenizer

            self.model = load_pretrained(self.model_dir, device=device)
            config: EmotionLlamaConfig = self.model.config
            processor = EmotionLlamaProcessor(load_tokenizer(config), config)
            self.encoders = build_encoders(config, device=device, dtype=torch.float32)
            self.label_gen = Generator(self.model, processor, task="emotion", max_new_tokens=16)
            self.reason_gen = Generator(
                self.model, processor, task="reason", max_new_tokens=config.generation.max_new_tokens
            )
            frame = config.vision.frame if frame == "first" else frame
        else:
            from emotion_llama.backends.llm import make_llm

            config = load_config(preset)
            self.llm = make_llm(llm, cache=cache)
        from emotion_llama.backends.vlm import make_describer

        self.describer = make_describer(vlm, cache=cache)
        self.config = config
        self.perceiver = Perceiver(config.perception, frame=frame)

    def close(self) -> None:
        self.perceiver.close()

    def __enter__(self) -> Analyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, video: str | Path, *, subtitle: str | None = None) -> Analysis:
        from emotion_llama.annotate.pipeline import clue_record, reason_records

        t0 = time.perf_counter()
        perception = self.perceiver(video, subtitle=subtitle)
        t1 = time.perf_counter()
        record = clue_record(perception)
        timings = {"perception": t1 - t0}
        if self.describer is not None and perception.peak_frame is not None:
            from emotion_llama.annotate.pipeline import add_visual_objective

            add_visual_objective(
                record, self.describer.describe([perception.peak_frame])[0], self.describer.name
            )
            timings["vlm"] = time.perf_counter() - t1
            t1 = time.perf_counter()
        if self.model is None:
            reason_records([record], self.llm)
            timings["llm"] = time.perf_counter() - t1
            label = record["label"]
            return Analysis(
                perception.name, label, record["smp_reason_caption"], record, timings, perception.timeline
            )
        return self._with_model(perception, record, timings, t1)

    def _with_model(
        self, perception: Any, record: dict[str, Any], timings: dict[str, float], t1: float
    ) -> Analysis:
        from emotion_llama.errors import EmotionLlamaError
        from emotion_llama.model.generation import ClipInput
        from emotion_llama.perception.pipeline import encode
        from emotion_llama.prompts import LABELS, parse_label_robust, parse_last_word

        feats = encode([perception], self.encoders, device=self.device)[0]
        if feats is None or perception.global_frame is None:
            raise EmotionLlamaError(
                f"{perception.source}: the model needs a face and audio: {'; '.join(perception.missing)}"
            )
        clip = ClipInput(record["subtitle"], perception.global_frame, feats)
        t2 = time.perf_counter()
        answer = self.label_gen([clip])[0]
        reasoning = self.reason_gen([clip])[0]
        timings.update(encoders=t2 - t1, model=time.perf_counter() - t2)
        label = parse_label_robust(answer, LABELS) or parse_last_word(answer, LABELS)
        record["llm"] = f"emotion-llama:{self.model_dir}"
        record["llm_label"] = label
        record["smp_reason_caption"] = reasoning or None
        return Analysis(
            perception.name,
            label,
            reasoning,
            {**record, "model_answer": answer},
            timings,
            perception.timeline,
        )
