"""What answers a clip once perception and the clues are done: an :class:`Answerer`.

Two of them, behind the same :class:`Analysis`:

- :class:`ClueAnswerer` (``clues``): a local or remote instruct LLM names the label where the AU
  rules and the other modalities named none, and writes the reasoning (or answers the user's
  question), each answer checked for faithfulness against the clues;
- :class:`ModelAnswerer` (``model``): the four encoders and the multimodal Emotion-LLaMA model,
  which answers the emotion prompt (the label, by scoring the candidate words in one forward pass
  or by greedy generation) and a reasoning prompt (or the user's question).

An answerer is not thread-safe; the :class:`~emotion_llama.serve.predictor.Predictor` runs one
call at a time. What an answer writes into a clip's record is in
:mod:`emotion_llama.annotate.records`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.prompts import LABELS

if TYPE_CHECKING:
    from emotion_llama.model.vllm_engine import Backend, VllmSpec

Kind = Literal["clues", "model"]
LabelMode = Literal["score", "generate"]


@dataclass
class Analysis:
    """The result for one clip."""

    name: str
    label: str | None
    reasoning: str | None
    record: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    #: The AU timeline (for the PNG and the page's chart); in the JSON as ``au_timeline``.
    timeline: Any = None
    #: Probability of each candidate label where the model scored them (full model), else ``None``.
    scores: dict[str, float] | None = None
    #: The user's question when one was asked; ``reasoning`` then holds the answer to it.
    question: str | None = None
    #: The AU peak frame, (H, W, 3) uint8 RGB, or ``None`` without a face; not in the JSON.
    peak_frame: Any = None

    def partial(self) -> Analysis:
        """This result before its reasoning (a stream's ``clues`` event): no reasoning, no peak
        frame, and its own copy of the timings so far."""
        return replace(self, reasoning=None, timings=dict(self.timings), peak_frame=None)

    def to_dict(self, *, with_timeline: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "scores": self.scores,
            "reasoning": self.reasoning,
            "question": self.question,
            "clues": self.record,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }
        if with_timeline:
            out["au_timeline"] = None if self.timeline is None else self.timeline.to_dict()
        return out


@dataclass(frozen=True)
class Event:
    """One step of :meth:`Predictor.stream`: ``clues`` (the clip's clues and label, before any
    reasoning; ``data`` is a partial :class:`Analysis`), ``delta`` (a piece of the reasoning text)
    and last ``done`` (the complete :class:`Analysis`)."""

    kind: Literal["clues", "delta", "done"]
    data: Any


@dataclass
class Perceived:
    """One clip ready for an answerer: what perception found, its clue record (see
    :func:`~emotion_llama.annotate.records.clue_record`) and the seconds spent so far."""

    perception: Any
    record: dict[str, Any]
    timings: dict[str, float]

    def analysis(
        self,
        *,
        label: str | None,
        reasoning: str | None,
        question: str | None,
        scores: dict[str, float] | None = None,
    ) -> Analysis:
        """The clip's :class:`Analysis` with this answer (its record and timings, not copies)."""
        p = self.perception
        return Analysis(
            name=p.name,
            label=label,
            reasoning=reasoning,
            record=self.record,
            timings=self.timings,
            timeline=p.timeline,
            scores=scores,
            question=question,
            peak_frame=p.peak_frame,
        )


class Answerer(Protocol):
    """Answers perceived clips: the label and the reasoning (or the answer to a user's question)."""

    #: ``clues`` or ``model``.
    kind: Kind
    #: The model's name in the API (``/v1/models``).
    model_id: str
    #: What answers, in words.
    backend_name: str

    def answer(self, clips: Sequence[Perceived], question: str | None) -> list[Analysis | EmotionLlamaError]:
        """The clips in one batch, a result per clip in order; a clip that cannot be answered
        gets its error in its place."""
        ...

    def stream(self, clip: Perceived, question: str | None) -> Iterator[Event]:
        """One clip as events (see :class:`Event`); the clip's own error is raised instead."""
        ...


class ClueAnswerer:
    """The clue pipeline's instruct LLM: labels where the clues named none, reasoning or the answer
    to a question, each checked for faithfulness (:mod:`emotion_llama.annotate.records`)."""

    kind: Kind = "clues"
    model_id = "emotion-llama-clues"

    def __init__(
        self, llm: Any, *, label_set: Sequence[str] = LABELS, max_new_tokens: int | None = None
    ) -> None:
        """``llm``: a chat LLM (:func:`emotion_llama.backends.llm.make_llm`); ``max_new_tokens``:
        the reasoning length (``None``: the pipeline's default)."""
        self.llm = llm
        self.label_set = tuple(label_set)
        self.max_new_tokens = max_new_tokens
        self.backend_name = f"clue pipeline + {llm.name}"

    def answer(self, clips: Sequence[Perceived], question: str | None) -> list[Analysis | EmotionLlamaError]:
        """The reasoning of every clip in one batch; with ``question``, its answer as well (the
        result's ``reasoning`` is then that answer)."""
        from emotion_llama.annotate.records import reason_records

        if not clips:
            return []
        t0 = time.perf_counter()
        records = [c.record for c in clips]
        reason_records(records, self.llm, self.label_set, max_new_tokens=self.max_new_tokens)
        answers = self._answer_question(records, question) if question else [None] * len(records)
        share = (time.perf_counter() - t0) / len(clips)
        out: list[Analysis | EmotionLlamaError] = []
        for clip, answer in zip(clips, answers, strict=True):
            clip.timings["llm"] = share
            reasoning = answer if question else clip.record["smp_reason_caption"]
            out.append(clip.analysis(label=clip.record["label"], reasoning=reasoning, question=question))
        return out

    def stream(self, clip: Perceived, question: str | None) -> Iterator[Event]:
        """The clues and label first; then the reasoning, which comes in one piece once it has
        passed the faithfulness check (streaming it token by token would show text that may be
        withdrawn)."""
        from emotion_llama.annotate.records import infer_missing_labels, reason_records

        t0 = time.perf_counter()
        record = clip.record
        infer_missing_labels([record], self.llm, self.label_set)
        yield Event(
            "clues", clip.analysis(label=record["label"], reasoning=None, question=question).partial()
        )
        if question:
            answer = self._answer_question([record], question)[0]
        else:
            reason_records([record], self.llm, self.label_set, max_new_tokens=self.max_new_tokens)
            answer = record["smp_reason_caption"]
        if answer:
            yield Event("delta", answer)
        clip.timings["llm"] = time.perf_counter() - t0
        yield Event("done", clip.analysis(label=record["label"], reasoning=answer, question=question))

    def _answer_question(self, records: list[dict[str, Any]], question: str) -> list[str | None]:
        from emotion_llama.annotate.records import answer_question

        return answer_question(records, self.llm, question, max_new_tokens=self.max_new_tokens)


class ModelAnswerer:
    """The full Emotion-LLaMA model of a checkpoint folder, with its four encoders: the label
    (scored or generated) and the reasoning; the feature parts a clip lacks are not fed (modalities.py)."""

    kind: Kind = "model"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "cpu",
        label_set: Sequence[str] = LABELS,
        label_mode: LabelMode = "score",
        static_cache: bool = False,
        max_new_tokens: int | None = None,
        dtype: str | None = None,
        quantization: str | None = None,
        vllm: VllmSpec | None = None,
        compile_scoring: bool = False,
    ) -> None:
        """Loads the checkpoint, its tokenizer and the encoders. ``vllm``: vLLM decodes the prompts
        the model computes (:mod:`emotion_llama.model.vllm_engine`; labels generated, since vLLM
        gives no label probabilities; no static cache, no quantization). ``compile_scoring``: label
        scoring's forwards through ``torch.compile``. ``static_cache``: generate with
        a preallocated KV cache (compiled on a GPU); ``max_new_tokens``: the reasoning length
        (``None``: the checkpoint's ``generation.max_new_tokens``); ``dtype``: the precision of the
        model and the encoders (``None``/auto: bfloat16 on a CUDA GPU that has it, float16 on other
        CUDA GPUs, float32 on the CPU; :mod:`emotion_llama.precision`); ``quantization``
        (``8bit``/``4bit``): the LLM's linear layers in bitsandbytes (:mod:`emotion_llama.model.quantize`);
        ``fp8``: in FP8 matmuls, LoRA merged (:mod:`emotion_llama.model.fp8`)."""
        from emotion_llama.encoders.models import build_encoders
        from emotion_llama.model.checkpoint import load_pretrained, resolve_checkpoint
        from emotion_llama.model.processor import EmotionLlamaProcessor
        from emotion_llama.model.quantize import check_quantization
        from emotion_llama.model.tokenizer import load_tokenizer
        from emotion_llama.precision import torch_dtype

        if vllm is not None and (label_mode == "score" or static_cache or quantization or compile_scoring):
            raise EmotionLlamaError(
                "vLLM decodes greedily from its own weights: its labels are generated (label_mode "
                "'generate'), without a static cache, compiled scoring or 8/4-bit/FP8 weights "
                "of the Hugging Face model"
            )
        self.backend: Backend | None = vllm.before_load() if vllm is not None else None
        self.model_dir = resolve_checkpoint(model_dir)
        self.device = device
        self.label_set = tuple(label_set)
        self.label_mode: LabelMode = label_mode
        self.generate_kwargs: dict[str, Any] = {"cache_implementation": "static"} if static_cache else {}
        #: The precision the model and the encoders run in.
        self.dtype = torch_dtype(dtype, device)
        #: ``8bit``/``4bit``/``fp8`` when the LLM's linear layers are quantized, else ``None``.
        self.quantization = check_quantization(quantization)
        self.model: Any = load_pretrained(
            self.model_dir, device=device, dtype=self.dtype, quantization=self.quantization
        )
        config = self.model.config
        if vllm is not None:
            self.backend = vllm.after_load(self.model, self.backend)
        self.processor = EmotionLlamaProcessor(load_tokenizer(config), config)
        self.encoders = build_encoders(config, device=device, dtype=self.dtype)
        self.reason_tokens: int = (
            max_new_tokens if max_new_tokens is not None else config.generation.max_new_tokens
        )
        self.model_id = f"emotion-llama-{self.model_dir.name}"
        self.backend_name = f"emotion-llama model {self.model_dir}" + (
            f" (vLLM engine: {self.backend.name})" if self.backend is not None else ""
        )
        self._label_scorer: Any = None
        self.compile_scoring = compile_scoring

    def answer(self, clips: Sequence[Perceived], question: str | None) -> list[Analysis | EmotionLlamaError]:
        """The clips through the encoders, then the model in one batch. The feature parts a clip
        lacks (no face, no audio track) or whose modality was not chosen are not fed: they get no
        positions in the prompt (:mod:`emotion_llama.modalities`), and ``record["inputs"]["fed"]``
        says what the model was given. A clip with nothing left gets an error saying why."""
        import numpy as np

        from emotion_llama.annotate.records import apply_model_answer
        from emotion_llama.modalities import FEATURE_PARTS, MODALITIES, absent_parts, fed
        from emotion_llama.model.generation import ClipInput
        from emotion_llama.perception.pipeline import encode_available

        errors: dict[int, EmotionLlamaError] = {}
        inputs: list[ClipInput] = []
        keep: list[int] = []
        t0 = time.perf_counter()
        size = self.model.config.vision.image_size
        for i, clip in enumerate(clips):
            p = clip.perception
            try:  # each clip alone (its features do not depend on the batch): one failing fails alone
                f, absent = encode_available([p], self.encoders, device=self.device)[0]
            except Exception as exc:
                errors[i] = EmotionLlamaError(
                    f"{p.source}: the encoders failed ({type(exc).__name__}: {exc})"
                )
                continue
            chosen = clip.record.get("inputs", {}).get("modalities", list(MODALITIES))
            subtitle = clip.record["subtitle"] if "text" in chosen else ""
            if absent == set(FEATURE_PARTS) and not subtitle:
                errors[i] = EmotionLlamaError(f"{p.source}: nothing to answer from: {'; '.join(p.missing)}")
                continue
            # the clip's own gaps, beyond the modalities not chosen
            lacking = absent - absent_parts(chosen)
            clip.record.setdefault("inputs", {"modalities": list(chosen)})["fed"] = fed(chosen, lacking)
            # an absent frame gets no positions: this placeholder only fills the batch's pixel tensor
            frame = p.global_frame if "frame" not in absent else np.zeros((size, size, 3), np.uint8)
            inputs.append(ClipInput(subtitle, frame, f, absent=absent))
            keep.append(i)
        t1 = time.perf_counter()
        if not inputs:
            return [errors[i] for i in range(len(clips))]
        labels, scores, answers = self.predict_clips(inputs)
        reasonings = self.reason_clips(inputs, question)
        t2 = time.perf_counter()
        done: dict[int, Analysis] = {}
        for j, i in enumerate(keep):
            clip = clips[i]
            clip.timings.update(encoders=(t1 - t0) / len(clips), model=(t2 - t1) / len(inputs))
            apply_model_answer(
                clip.record,
                labels[j],
                reasonings[j],
                llm_name=f"emotion-llama:{self.model_dir}",
                model_answer=answers[j],
                question=question,
            )
            done[i] = clip.analysis(
                label=labels[j], reasoning=reasonings[j] or None, question=question, scores=scores[j]
            )
        return [done[i] if i in done else errors[i] for i in range(len(clips))]

    def stream(self, clip: Perceived, question: str | None) -> Iterator[Event]:
        """The model answers in one batch call; its reasoning comes as one piece."""
        result = self.answer([clip], question)[0]
        if isinstance(result, EmotionLlamaError):
            raise result
        yield Event("clues", result.partial())
        if result.reasoning:
            yield Event("delta", result.reasoning)
        yield Event("done", result)

    # -- the model on clip inputs (video-free: pre-extracted features work too) --------------------
    def predict_clips(
        self, clips: Sequence[Any]
    ) -> tuple[list[str | None], list[dict[str, float] | None], list[str]]:
        """Labels (and their probabilities when scored) of :class:`ClipInput` s, in one batch, and
        the model's answers to the emotion prompt."""
        from emotion_llama.prompts import parse_label_robust, parse_last_word

        if self.label_mode == "score":
            scored = self.scorer()(clips)
            return [s.label for s in scored], [dict(s.scores) for s in scored], [s.label for s in scored]
        answers = self.generator("emotion", None, 16)(clips)
        ls = self.label_set
        # The authors' rule falls back to neutral; with a set without it, an unparsed answer is None.
        fallback = "neutral" if "neutral" in ls else ""
        labels = [parse_label_robust(a, ls) or parse_last_word(a, ls, fallback) or None for a in answers]
        return labels, [None] * len(clips), answers

    def reason_clips(self, clips: Sequence[Any], question: str | None = None) -> list[str]:
        """The reasoning prompt (or ``question`` as the instruction) answered for each clip."""
        return self.generator("reason", question, self.reason_tokens)(clips)

    def generator(self, task: str, instruction: str | None, max_new_tokens: int) -> Any:
        """Greedy answers to ``task``'s prompt: decoded here, or by vLLM."""
        if self.backend is not None:
            from emotion_llama.model.vllm_engine import VllmGenerator

            return VllmGenerator(
                self.model,
                self.processor,
                self.backend,
                task=task,
                instruction=instruction,
                max_new_tokens=max_new_tokens,
            )
        from emotion_llama.model.generation import Generator

        return Generator(
            self.model,
            self.processor,
            task=task,
            instruction=instruction,
            max_new_tokens=max_new_tokens,
            generate_kwargs=self.generate_kwargs,
        )

    def scorer(self) -> Any:
        """The label scorer (one forward pass per batch), built on first use."""
        if self._label_scorer is None:
            from emotion_llama.model.scoring import LabelScorer

            self._label_scorer = LabelScorer(self.model, self.processor, labels=self.label_set)
            if self.compile_scoring:
                self._label_scorer.compile()
        return self._label_scorer
