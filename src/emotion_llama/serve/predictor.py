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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from emotion_llama.config import EmotionLlamaConfig, load_config
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.prompts import LABELS

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
        llm_device: str | None = None,
        llm_dtype: str | None = None,
        max_new_tokens: int | None = None,
        language: str | None = None,
        asr_model: str | None = None,
        label_set: Sequence[str] = LABELS,
    ) -> None:
        """``static_cache`` (full model): generate with a preallocated KV cache, which transformers
        compiles on a GPU (the decoding step as CUDA graphs); same text, less per-token overhead.

        ``llm_device``/``llm_dtype``: where and in which precision a local clue-pipeline LLM runs
        (default: ``device``, and the device's default dtype). ``max_new_tokens``: the reasoning
        length (the clue pipeline's LLM, or the full model's ``generation.max_new_tokens``).
        ``language`` (a Whisper code, ``"auto"`` to detect) and ``asr_model`` replace the config's
        speech recognition settings; ``None`` keeps them. ``label_set``: the candidate labels."""
        from emotion_llama.backends.llm import check_dtype
        from emotion_llama.perception.pipeline import Perceiver

        if label_mode not in ("score", "generate"):
            raise EmotionLlamaError(f"label_mode must be 'score' or 'generate', not {label_mode!r}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise EmotionLlamaError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.label_set: tuple[str, ...] = tuple(label_set)
        if not self.label_set or len(set(self.label_set)) != len(self.label_set):
            raise EmotionLlamaError(f"label_set must be distinct labels, at least one: {list(label_set)}")
        check_dtype(llm_dtype)
        self.model_dir = Path(model_dir) if model_dir else None
        self.device = device
        self.llm_device = llm_device or device
        self.llm_dtype = llm_dtype
        #: The reasoning length asked for (``None``: the pipeline's default).
        self.max_new_tokens = max_new_tokens
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
            self.llm = make_llm(llm, cache=cache, device=self.llm_device, dtype=llm_dtype)
            self.model_id = "emotion-llama-clues"
            self.backend_name = f"clue pipeline + {self.llm.name}"
        from emotion_llama.backends.vlm import make_describer

        self.describer = make_describer(vlm, cache=cache)
        speech: dict[str, Any] = {}
        if language is not None:
            speech["language"] = None if language.strip().lower() == "auto" else language.strip()
        if asr_model is not None:
            speech["asr_model"] = asr_model
        if speech:
            config = replace(config, perception=replace(config.perception, **speech))
        if max_new_tokens is not None:
            config = replace(config, generation=replace(config.generation, max_new_tokens=max_new_tokens))
        self.config = config
        sp = config.perception
        if transcribe:
            # A speech model that cannot load (or an English-only one asked for another language)
            # fails here, before the face model loads, whose finaliser would then fail at exit;
            # the model is cached, so the Perceiver's transcriber reuses it.
            from emotion_llama.perception.transcript import WhisperTranscriber

            WhisperTranscriber(sp.asr_model, language=sp.language, beam_size=sp.asr_beam_size)
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
        from emotion_llama.errors import MediaError

        with self._lock:
            staged: list[tuple[Any, dict[str, Any], dict[str, float]] | EmotionLlamaError] = []
            for video, sub, nm in zip(videos, subs, nms, strict=True):
                try:
                    staged.append(self._perceive(video, sub, nm))
                except EmotionLlamaError as exc:
                    staged.append(exc)
                except (OSError, ValueError, EOFError) as exc:  # a decoder's own error: still this clip's
                    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    staged.append(MediaError(f"{video}: not a readable video ({detail})"))
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
        t1 = time.perf_counter()
        record = clue_record(perception, label_set=self.label_set)
        t2 = time.perf_counter()
        # "perception" holds the clues too (as it always has); "clues" is their share of it
        timings = {"perception": t2 - t0, "clues": t2 - t1}
        if self.describer is not None and perception.peak_frame is not None:
            t3 = time.perf_counter()
            description = self.describer.describe([perception.peak_frame])[0]
            add_visual_objective(record, description, self.describer.name)
            timings["vlm"] = time.perf_counter() - t3
        return perception, record, timings

    def _answer_question(self, records: list[dict[str, Any]], question: str) -> list[str | None]:
        """The LLM's answers to a user's question about each clip, checked like the reasoning: an
        answer naming evidence the clip does not support is replaced by the clues themselves."""
        from emotion_llama.annotate.clues import clue_text
        from emotion_llama.annotate.faithfulness import (
            check_reasoning,
            evidence_from_record,
            grounded_reasoning,
        )
        from emotion_llama.annotate.reasoning import question_conversation, reasoning_params

        answers: list[str | None] = [None] * len(records)
        todo = [i for i, r in enumerate(records) if clue_text(r).strip()]
        if not todo:
            return answers
        got = self.llm.chat_many(
            [question_conversation(clue_text(records[i]), question) for i in todo],
            reasoning_params(self.max_new_tokens),
        )
        for i, a in zip(todo, got, strict=True):
            evidence = evidence_from_record(records[i])
            verdict = check_reasoning(a, evidence)
            records[i]["answer_faithfulness"] = verdict.to_dict()
            if verdict.ok:
                answers[i] = a.strip() or None
            else:
                answers[i] = "From the clues alone: " + grounded_reasoning(evidence, records[i].get("label"))
        return answers

    def _clues_stage(
        self, staged: list[tuple[Any, dict[str, Any], dict[str, float]]], question: str | None
    ) -> list[Analysis]:
        from emotion_llama.annotate.pipeline import reason_records

        if not staged:
            return []
        t0 = time.perf_counter()
        records = [r for _, r, _ in staged]
        reason_records(records, self.llm, self.label_set, max_new_tokens=self.max_new_tokens)
        answers = self._answer_question(records, question) if question else [None] * len(records)
        share = (time.perf_counter() - t0) / len(staged)
        out = []
        for (p, r, timings), answer in zip(staged, answers, strict=True):
            timings["llm"] = share
            out.append(
                Analysis(
                    name=p.name,
                    label=r["label"],
                    reasoning=answer if question else r["smp_reason_caption"],
                    record=r,
                    timings=timings,
                    timeline=p.timeline,
                    question=question,
                    peak_frame=p.peak_frame,
                )
            )
        return out

    def _stream_clues(
        self, perception: Any, record: dict[str, Any], timings: dict[str, float], question: str | None
    ) -> Iterator[Event]:
        """The clues and label first; then the reasoning, which comes in one piece once it has passed
        the faithfulness check (streaming it token by token would show text that may be withdrawn)."""
        from emotion_llama.annotate.pipeline import infer_missing_labels, reason_records

        t0 = time.perf_counter()
        infer_missing_labels([record], self.llm, self.label_set)
        p = perception
        yield Event(
            "clues",
            Analysis(
                name=p.name, label=record["label"], reasoning=None, record=record, timings=dict(timings),
                timeline=p.timeline, question=question,
            ),
        )  # fmt: skip
        if question:
            answer = self._answer_question([record], question)[0]
        else:
            reason_records([record], self.llm, self.label_set, max_new_tokens=self.max_new_tokens)
            answer = record["smp_reason_caption"]
        if answer:
            yield Event("delta", answer)
        timings["llm"] = time.perf_counter() - t0
        yield Event(
            "done",
            Analysis(
                name=p.name, label=record["label"], reasoning=answer, record=record, timings=timings,
                timeline=p.timeline, question=question, peak_frame=p.peak_frame,
            ),
        )  # fmt: skip

    def _model_stage(
        self, staged: list[tuple[Any, dict[str, Any], dict[str, float]]], question: str | None
    ) -> list[Analysis | EmotionLlamaError]:
        from emotion_llama.annotate.faithfulness import check_reasoning, evidence_from_record
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
            r["label"], r["label_source"] = labels[j], "model"
            if not question:
                r["smp_reason_caption"] = reasonings[j] or None
                r["reasoning_source"] = "model" if reasonings[j] else None
            if reasonings[j]:
                # checked and reported, not replaced: the text is the model's answer
                verdict = check_reasoning(reasonings[j], evidence_from_record(r))
                r["faithfulness"] = {**verdict.to_dict(), "source": "model"}
            rec = {**r, "model_answer": answers[j]}
            out[i] = Analysis(
                name=p.name, label=labels[j], reasoning=reasonings[j] or None, record=rec, timings=timings,
                timeline=p.timeline, scores=scores[j], question=question, peak_frame=p.peak_frame,
            )  # fmt: skip
        return out

    # -- the full model on clip inputs (video-free: pre-extracted features work too) --------------
    def predict_clips(
        self, clips: Sequence[Any]
    ) -> tuple[list[str | None], list[dict[str, float] | None], list[str]]:
        """Labels (and their probabilities when scored) of :class:`ClipInput` s, in one batch."""
        from emotion_llama.prompts import parse_label_robust, parse_last_word

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
            ls = self.label_set
            # The authors' rule falls back to neutral; with a set without it, an unparsed answer is None.
            fallback = "neutral" if "neutral" in ls else ""
            labels = [parse_label_robust(a, ls) or parse_last_word(a, ls, fallback) or None for a in answers]
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

            scorer = self._label_scorer = LabelScorer(self.model, self.processor, labels=self.label_set)
        return scorer


def _partial(a: Analysis) -> Analysis:
    return Analysis(
        name=a.name, label=a.label, reasoning=None, record=a.record, timings=dict(a.timings),
        timeline=a.timeline, scores=a.scores, question=a.question,
    )  # fmt: skip


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
