"""The predictor: everything loaded once, then video (or pre-extracted features) + optional subtitle
+ optional question in, label + reasoning + clues out. ``analyze``, the HTTP API and the web page
all use this one object.

Two kinds of model behind the same :class:`Analysis`:

- ``clues`` (default, runs offline): perception -> AU-derived candidate labels, expression phrases,
  tone, transcript -> a local or remote instruct LLM names the label (unless the AU rules already
  do) and writes the reasoning (or answers the user's question about the clip);
- ``model`` (``model_dir``): the same perception feeds the four encoders and the multimodal
  Emotion-LLaMA model, which answers the emotion prompt (label, by scoring the candidate words in
  one forward pass or by greedy generation) and a reasoning prompt (or the user's question).

The object is thread-safe in the simplest way: one call runs at a time (a lock), since the face
model and the LLMs are not; a server queues requests in front of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from emotion_llama.config import EmotionLlamaConfig, load_config
from emotion_llama.errors import EmotionLlamaError

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


class Predictor:
    """Load once (perception models, the LLM or the Emotion-LLaMA model), predict many clips."""

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
        label_mode: LabelMode = "score",
        transcribe: bool = True,
        static_cache: bool = False,
    ) -> None:
        """``static_cache`` (full model): generate with a preallocated KV cache, which transformers
        compiles on a GPU (the decoding step as CUDA graphs); same text, less per-token overhead."""
        from emotion_llama.perception.pipeline import Perceiver

        if label_mode not in ("score", "generate"):
            raise EmotionLlamaError(f"label_mode must be 'score' or 'generate', not {label_mode!r}")
        self.model_dir = Path(model_dir) if model_dir else None
        self.device = device
        self.label_mode: LabelMode = label_mode
        self._generate_kwargs: dict[str, Any] = {"cache_implementation": "static"} if static_cache else {}
        self.model: Any = None
        self.llm: Any = None
        self._lock = threading.RLock()
        if self.model_dir is not None:
            import torch

            from emotion_llama.encoders.models import build_encoders
            from emotion_llama.model.checkpoint import load_pretrained
            from emotion_llama.model.processor import EmotionLlamaProcessor
            from emotion_llama.model.tokenizer import load_tokenizer

            self.model = load_pretrained(self.model_dir, device=device)
            config: EmotionLlamaConfig = self.model.config
            self.processor = EmotionLlamaProcessor(load_tokenizer(config), config)
            self.encoders = build_encoders(config, device=device, dtype=torch.float32)
            frame = config.vision.frame if frame == "first" else frame
            self.model_id = f"emotion-llama-{self.model_dir.name}"
            self.backend_name = f"emotion-llama model {self.model_dir}"
        else:
            from emotion_llama.backends.llm import make_llm

            config = load_config(preset)
            self.llm = make_llm(llm, cache=cache)
            self.model_id = "emotion-llama-clues"
            self.backend_name = f"clue pipeline + {self.llm.name}"
        from emotion_llama.backends.vlm import make_describer

        self.describer = make_describer(vlm, cache=cache)
        self.config = config
        self.perceiver = Perceiver(config.perception, frame=frame, transcribe=transcribe)

    @property
    def kind(self) -> Kind:
        return "clues" if self.model is None else "model"

    def close(self) -> None:
        self.perceiver.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API -----------------------------------------------------------------------------
    def analyze(
        self,
        video: str | Path,
        *,
        subtitle: str | None = None,
        question: str | None = None,
        name: str | None = None,
    ) -> Analysis:
        """One clip: label, reasoning (or the answer to ``question``) and clues."""
        result = self.analyze_many([video], subtitles=[subtitle], question=question, names=[name])[0]
        if isinstance(result, Exception):
            raise result
        return result

    __call__ = analyze

    def analyze_many(
        self,
        videos: Sequence[str | Path],
        *,
        subtitles: Sequence[str | None] | None = None,
        question: str | None = None,
        names: Sequence[str | None] | None = None,
    ) -> list[Analysis | EmotionLlamaError]:
        """Several clips, the LLM or model stage in one batch. A clip that fails (broken file, no
        face for the full model...) gets its error in its place; the others are answered."""
        subs = list(subtitles) if subtitles is not None else [None] * len(videos)
        nms = list(names) if names is not None else [None] * len(videos)
        if len(subs) != len(videos) or len(nms) != len(videos):
            raise EmotionLlamaError("analyze_many: give one subtitle and one name per video (or none)")
        with self._lock:
            staged: list[tuple[Any, dict[str, Any], dict[str, float]] | EmotionLlamaError] = []
            for video, sub, nm in zip(videos, subs, nms, strict=True):
                try:
                    staged.append(self._perceive(video, sub, nm))
                except EmotionLlamaError as exc:
                    staged.append(exc)
            ok = [s for s in staged if not isinstance(s, EmotionLlamaError)]
            done = self._clues_stage(ok, question) if self.model is None else self._model_stage(ok, question)
            it = iter(done)
            return [s if isinstance(s, EmotionLlamaError) else next(it) for s in staged]

    def stream(
        self,
        video: str | Path,
        *,
        subtitle: str | None = None,
        question: str | None = None,
        name: str | None = None,
    ) -> Iterator[Event]:
        """One clip as events: its clues and label first, then the reasoning piece by piece, then
        the complete result. Errors of the clip (a broken file...) are raised before any event."""
        with self._lock:
            perception, record, timings = self._perceive(video, subtitle, name)
            if self.model is not None:
                # The full model answers in one batch call; its reasoning comes as one piece.
                result = self._model_stage([(perception, record, timings)], question)[0]
                if isinstance(result, EmotionLlamaError):
                    raise result
                yield Event("clues", _partial(result))
                if result.reasoning:
                    yield Event("delta", result.reasoning)
                yield Event("done", result)
                return
            yield from self._stream_clues(perception, record, timings, question)

    # -- stages ---------------------------------------------------------------------------------
    def _perceive(
        self, video: str | Path, subtitle: str | None, name: str | None
    ) -> tuple[Any, dict[str, Any], dict[str, float]]:
        from emotion_llama.annotate.pipeline import add_visual_objective, clue_record

        t0 = time.perf_counter()
        perception = self.perceiver(video, subtitle=subtitle, name=name)
        record = clue_record(perception)
        timings = {"perception": time.perf_counter() - t0}
        if self.describer is not None and perception.peak_frame is not None:
            t1 = time.perf_counter()
            description = self.describer.describe([perception.peak_frame])[0]
            add_visual_objective(record, description, self.describer.name)
            timings["vlm"] = time.perf_counter() - t1
        return perception, record, timings

    def _clues_stage(
        self, staged: list[tuple[Any, dict[str, Any], dict[str, float]]], question: str | None
    ) -> list[Analysis]:
        from emotion_llama.annotate.clues import clue_text
        from emotion_llama.annotate.pipeline import reason_records
        from emotion_llama.annotate.reasoning import REASONING_PARAMS, question_conversation

        if not staged:
            return []
        t0 = time.perf_counter()
        records = [r for _, r, _ in staged]
        reason_records(records, self.llm)
        answers: list[str | None] = [None] * len(records)
        if question:
            todo = [i for i, r in enumerate(records) if clue_text(r).strip()]
            if todo:
                got = self.llm.chat_many(
                    [question_conversation(clue_text(records[i]), question) for i in todo], REASONING_PARAMS
                )
                for i, a in zip(todo, got, strict=True):
                    answers[i] = a.strip() or None
        share = (time.perf_counter() - t0) / len(staged)
        out = []
        for (p, r, timings), answer in zip(staged, answers, strict=True):
            timings["llm"] = share
            reasoning = answer if question else r["smp_reason_caption"]
            out.append(
                Analysis(p.name, r["label"], reasoning, r, timings, p.timeline, None, question, p.peak_frame)
            )
        return out

    def _stream_clues(
        self, perception: Any, record: dict[str, Any], timings: dict[str, float], question: str | None
    ) -> Iterator[Event]:
        from emotion_llama.annotate.clues import clue_text
        from emotion_llama.annotate.pipeline import apply_reasoning, infer_missing_labels
        from emotion_llama.annotate.reasoning import (
            REASONING_PARAMS,
            fine_conversation,
            question_conversation,
        )
        from emotion_llama.backends.llm import stream_chat

        t0 = time.perf_counter()
        text = clue_text(record)
        infer_missing_labels([record], self.llm)
        p = perception
        yield Event(
            "clues",
            Analysis(p.name, record["label"], None, record, dict(timings), p.timeline, None, question),
        )
        conversation = None
        if text.strip():
            if question:
                conversation = question_conversation(text, question)
            elif record["label"]:
                conversation = fine_conversation(text, record["label"])
        pieces: list[str] = []
        if conversation is not None:
            for piece in stream_chat(self.llm, conversation, REASONING_PARAMS):
                pieces.append(piece)
                yield Event("delta", piece)
        answer = "".join(pieces).strip() or None
        if not question:
            record["llm"] = self.llm.name
            if answer:
                apply_reasoning(record, answer, self.llm.name)
        timings["llm"] = time.perf_counter() - t0
        yield Event(
            "done",
            Analysis(
                p.name, record["label"], answer, record, timings, p.timeline, None, question, p.peak_frame
            ),
        )

    def _model_stage(
        self, staged: list[tuple[Any, dict[str, Any], dict[str, float]]], question: str | None
    ) -> list[Analysis | EmotionLlamaError]:
        from emotion_llama.model.generation import ClipInput
        from emotion_llama.perception.pipeline import encode

        out: list[Analysis | EmotionLlamaError] = []
        clips: list[ClipInput] = []
        keep: list[int] = []
        t0 = time.perf_counter()
        feats = encode([p for p, _, _ in staged], self.encoders, device=self.device) if staged else []
        for i, ((p, r, _), f) in enumerate(zip(staged, feats, strict=True)):
            if f is None or p.global_frame is None:
                out.append(
                    EmotionLlamaError(f"{p.source}: the model needs a face and audio: {'; '.join(p.missing)}")
                )
                continue
            out.append(EmotionLlamaError("pending"))
            clips.append(ClipInput(r["subtitle"], p.global_frame, f))
            keep.append(i)
        t1 = time.perf_counter()
        if not clips:
            return out
        labels, scores, answers = self.predict_clips(clips)
        reasonings = self.reason_clips(clips, question)
        t2 = time.perf_counter()
        for j, i in enumerate(keep):
            p, r, timings = staged[i]
            timings.update(encoders=(t1 - t0) / len(staged), model=(t2 - t1) / len(clips))
            r["llm"] = f"emotion-llama:{self.model_dir}"
            r["llm_label"] = labels[j]
            if not question:
                r["smp_reason_caption"] = reasonings[j] or None
            rec = {**r, "model_answer": answers[j]}
            out[i] = Analysis(
                p.name, labels[j], reasonings[j] or None, rec, timings, p.timeline, scores[j], question,
                p.peak_frame,
            )  # fmt: skip
        return out

    # -- the full model on clip inputs (video-free: pre-extracted features work too) --------------
    def predict_clips(
        self, clips: Sequence[Any]
    ) -> tuple[list[str | None], list[dict[str, float] | None], list[str]]:
        """Labels (and their probabilities when scored) of :class:`ClipInput` s, in one batch."""
        from emotion_llama.prompts import LABELS, parse_label_robust, parse_last_word

        if self.model is None:
            raise EmotionLlamaError("predict_clips needs the full model (start the predictor with model_dir)")
        with self._lock:
            if self.label_mode == "score":
                scored = self._scorer()(clips)
                return (
                    [s.label for s in scored],
                    [dict(s.scores) for s in scored],
                    [s.label for s in scored],
                )
            from emotion_llama.model.generation import Generator

            answers = Generator(
                self.model,
                self.processor,
                task="emotion",
                max_new_tokens=16,
                generate_kwargs=self._generate_kwargs,
            )(clips)
            labels = [parse_label_robust(a, LABELS) or parse_last_word(a, LABELS) for a in answers]
            return labels, [None] * len(clips), answers

    def reason_clips(self, clips: Sequence[Any], question: str | None = None) -> list[str]:
        """The reasoning prompt (or ``question`` as the instruction) answered for each clip."""
        from emotion_llama.model.generation import Generator

        if self.model is None:
            raise EmotionLlamaError("reason_clips needs the full model (start the predictor with model_dir)")
        with self._lock:
            gen = Generator(
                self.model,
                self.processor,
                task="reason",
                instruction=question,
                max_new_tokens=self.config.generation.max_new_tokens,
                generate_kwargs=self._generate_kwargs,
            )
            return gen(clips)

    def _scorer(self) -> Any:
        scorer = getattr(self, "_label_scorer", None)
        if scorer is None:
            from emotion_llama.model.scoring import LabelScorer

            scorer = self._label_scorer = LabelScorer(self.model, self.processor)
        return scorer


def _partial(a: Analysis) -> Analysis:
    return Analysis(a.name, a.label, None, a.record, dict(a.timings), a.timeline, a.scores, a.question)


@dataclass
class _Pending:
    video: str | Path
    subtitle: str | None
    question: str | None
    name: str | None
    future: Any  # concurrent.futures.Future[Analysis]


class MicroBatcher:
    """Requests that arrive together are answered together: callers in several threads call
    :meth:`analyze`; one worker thread takes the first waiting request, waits up to ``max_wait_s``
    for more (at most ``max_batch``, all with the same question) and runs them through
    :meth:`Predictor.analyze_many`, so the LLM or the model sees one batch instead of a queue of
    single prompts. Perception stays per clip; the gain is in the language model's stage."""

    def __init__(self, predictor: Predictor, *, max_batch: int = 4, max_wait_s: float = 0.05) -> None:
        import queue

        if max_batch < 1:
            raise EmotionLlamaError(f"max_batch must be >= 1, got {max_batch}")
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._held: list[_Pending] = []  # taken from the queue but with another question
        self._closed = False
        #: Sizes of the batches run so far (for tests, metrics and the benchmark).
        self.batch_sizes: list[int] = []
        self._worker = threading.Thread(target=self._run, name="predictor-batcher", daemon=True)
        self._worker.start()

    def analyze(
        self,
        video: str | Path,
        *,
        subtitle: str | None = None,
        question: str | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> Analysis:
        from concurrent.futures import Future

        if self._closed:
            raise EmotionLlamaError("the predictor is shutting down")
        fut: Future[Analysis] = Future()
        self._queue.put(_Pending(video, subtitle, question, name, fut))
        return fut.result(timeout)

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _next(self, timeout: float | None, *, held: bool = True) -> _Pending | None:
        """The oldest held request (one with another question than the last batch's), else the
        next from the queue; ``held=False`` reads the queue only."""
        import queue

        if held and self._held:
            return self._held.pop(0)
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _run(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                if self._closed:
                    return
                continue
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                item = self._next(left, held=False)
                if item is None:
                    if self._closed:
                        self._queue.put(None)  # the stop signal, for the loop's next turn
                    break
                if item.question == first.question:
                    batch.append(item)
                else:
                    self._held.append(item)
            self.batch_sizes.append(len(batch))
            try:
                results: list[Any] = self.predictor.analyze_many(
                    [b.video for b in batch],
                    subtitles=[b.subtitle for b in batch],
                    question=first.question,
                    names=[b.name for b in batch],
                )
            except BaseException as exc:  # the whole call failed: every caller hears why
                results = [exc] * len(batch)
            for item, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
