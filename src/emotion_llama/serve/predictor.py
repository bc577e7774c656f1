"""The predictor: everything loaded once, then video (or pre-extracted features) + optional subtitle
+ optional question in, label + reasoning + clues out. ``analyze``, the HTTP API and the web page
all use this one object.

A :class:`Predictor` is a perceiver (faces, AUs, peak frame, audio, transcript: the clue record of
:func:`~emotion_llama.annotate.records.clue_record`), an optional vision-language describer, and
one answerer (:mod:`emotion_llama.serve.answerers`), which says the two kinds of model behind the
same :class:`Analysis`:

- ``clues`` (default, runs offline, :class:`~emotion_llama.serve.answerers.ClueAnswerer`):
  AU-derived candidate labels, expression phrases, tone, transcript -> a local or remote instruct
  LLM names the label (unless the AU rules already do) and writes the reasoning (or answers the
  user's question about the clip);
- ``model`` (``model_dir``, :class:`~emotion_llama.serve.answerers.ModelAnswerer`): the same
  perception feeds the four encoders and the multimodal Emotion-LLaMA model, which answers the
  emotion prompt (label, by scoring the candidate words in one forward pass or by greedy
  generation) and a reasoning prompt (or the user's question).

The object is thread-safe in the simplest way: one call runs at a time (a lock), since the face
model and the LLMs are not; a server queues requests in front of it (:class:`MicroBatcher` batches
those that arrive together).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotion_llama.closing import Closeable
from emotion_llama.config import EmotionLlamaConfig, load_config
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.modalities import parse_modalities
from emotion_llama.prompts import LABELS
from emotion_llama.serve.answerers import (
    Analysis,
    Answerer,
    ClueAnswerer,
    Event,
    Kind,
    LabelMode,
    ModelAnswerer,
    Perceived,
)
from emotion_llama.serve.batching import MicroBatcher

if TYPE_CHECKING:
    from emotion_llama.model.vllm_engine import VllmSpec

# Analysis, Event and MicroBatcher are imported from here (the serving app, the CLI, tests).
__all__ = ["Analysis", "Event", "Kind", "LabelMode", "MicroBatcher", "Predictor"]


class Predictor(Closeable):
    """Load once (perception models, the LLM or the Emotion-LLaMA model), predict many clips."""

    #: What answers the perceived clips, set by ``__init__`` (``None`` only in a subclass that
    #: loads nothing, such as the serving tests' stand-in; it counts as the clue pipeline).
    answerer: Answerer | None = None

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
        label_mode: LabelMode | None = None,
        transcribe: bool = True,
        static_cache: bool = False,
        llm_device: str | None = None,
        llm_dtype: str | None = None,
        dtype: str | None = None,
        quantization: str | None = None,
        max_new_tokens: int | None = None,
        language: str | None = None,
        asr_model: str | None = None,
        label_set: Sequence[str] = LABELS,
        modalities: str | Sequence[str] | None = None,
        vllm: VllmSpec | None = None,
        compile_scoring: bool = False,
    ) -> None:
        """``static_cache`` (full model): generate with a preallocated KV cache, which transformers
        compiles on a GPU (the decoding step as CUDA graphs); same text, less per-token overhead.
        ``compile_scoring`` (full model): label scoring's forwards through ``torch.compile``.

        ``llm_device``/``llm_dtype``: where and in which precision a local clue-pipeline LLM runs
        (default: ``device``, and the device's default dtype); ``dtype``: the full model's and its
        encoders' (the same default: bfloat16 on a CUDA GPU that has it, float32 on the CPU);
        ``quantization`` (``8bit``/``4bit``, full model only): its LLM in bitsandbytes weights; ``fp8``:
        in FP8 matmuls. ``max_new_tokens``: the reasoning
        length (the clue pipeline's LLM, or the full model's ``generation.max_new_tokens``).
        ``language`` (a Whisper code, ``"auto"`` to detect) and ``asr_model`` replace the config's
        speech recognition settings; ``None`` keeps them. ``label_set``: the candidate labels.
        ``modalities``: what clips are answered from by default (video, audio, text; ``None``: all;
        :mod:`emotion_llama.modalities`); each call may choose others. ``label_mode``: ``score``
        (the label the model gives the highest probability; the default) or ``generate`` (parsed
        from its greedy answer; the default with ``vllm``, which decodes the full model's prompts,
        :mod:`emotion_llama.model.vllm_engine`)."""
        from emotion_llama.model.checkpoint import resolve_checkpoint
        from emotion_llama.model.quantize import check_quantization
        from emotion_llama.perception.pipeline import Perceiver
        from emotion_llama.precision import check_dtype

        if vllm is not None and not model_dir:
            raise EmotionLlamaError(
                "vLLM decodes the Emotion-LLaMA model's prompts: give a checkpoint (--model)"
            )
        if label_mode is None:
            label_mode = "generate" if vllm is not None else "score"
        if label_mode not in ("score", "generate"):
            raise EmotionLlamaError(f"label_mode must be 'score' or 'generate', not {label_mode!r}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise EmotionLlamaError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.label_set: tuple[str, ...] = tuple(label_set)
        if not self.label_set or len(set(self.label_set)) != len(self.label_set):
            raise EmotionLlamaError(f"label_set must be distinct labels, at least one: {list(label_set)}")
        check_dtype(llm_dtype)
        check_dtype(dtype, "model")
        quantization = check_quantization(quantization)
        if quantization is not None and not model_dir:
            raise EmotionLlamaError(
                f"{quantization} weights are for the Emotion-LLaMA model: give a checkpoint (--model); "
                "the clue pipeline's LLM is chosen with --llm"
            )
        self.modalities: tuple[str, ...] = parse_modalities(modalities)
        # A run folder or its best/last pointer stands for its checkpoint folder.
        self.model_dir = resolve_checkpoint(model_dir) if model_dir else None
        self.device = device
        self.llm_device = llm_device or device
        self.llm_dtype = llm_dtype
        #: The reasoning length asked for (``None``: the pipeline's default).
        self.max_new_tokens = max_new_tokens
        self.label_mode: LabelMode = label_mode
        #: The answerer's Emotion-LLaMA model (full model) or its instruct LLM (clue pipeline); the
        #: other is ``None``.
        self.model: Any = None
        self.llm: Any = None
        self._lock = threading.RLock()
        config: EmotionLlamaConfig
        if self.model_dir is not None:
            self.answerer = ModelAnswerer(
                self.model_dir,
                device=device,
                label_set=self.label_set,
                label_mode=label_mode,
                static_cache=static_cache,
                max_new_tokens=max_new_tokens,
                dtype=dtype,
                quantization=quantization,
                vllm=vllm,
                compile_scoring=compile_scoring,
            )
            self.model = self.answerer.model
            config = self.model.config
            frame = config.vision.frame if frame == "first" else frame
        else:
            from emotion_llama.backends.llm import make_llm

            config = load_config(preset)
            self.llm = make_llm(llm, cache=cache, device=self.llm_device, dtype=llm_dtype)
            self.answerer = ClueAnswerer(self.llm, label_set=self.label_set, max_new_tokens=max_new_tokens)
        self.model_id: str = self.answerer.model_id
        self.backend_name: str = self.answerer.backend_name
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

            WhisperTranscriber.from_config(sp)
        self.perceiver = Perceiver(config.perception, frame=frame, transcribe=transcribe)

    @property
    def kind(self) -> Kind:
        """``clues`` or ``model``: the answerer's kind."""
        return "clues" if self.answerer is None else self.answerer.kind

    # the full model's parts, for callers that use them directly (AttributeError with the clue pipeline)
    @property
    def processor(self) -> Any:
        return self.answerer.processor

    @property
    def encoders(self) -> Any:
        return self.answerer.encoders

    def close(self) -> None:
        self.perceiver.close()

    # -- public API -----------------------------------------------------------------------------
    def analyze(
        self,
        video: str | Path,
        *,
        subtitle: str | None = None,
        question: str | None = None,
        name: str | None = None,
        modalities: str | Sequence[str] | None = None,
    ) -> Analysis:
        """One clip: label, reasoning (or the answer to ``question``) and clues."""
        result = self.analyze_many(
            [video], subtitles=[subtitle], question=question, names=[name], modalities=modalities
        )[0]
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
        modalities: str | Sequence[str] | None = None,
        perceived: Sequence[Any] | None = None,
    ) -> list[Analysis | EmotionLlamaError]:
        """Several clips, the LLM or model stage in one batch. A clip that fails (broken file,
        nothing left to answer from...) gets its error in its place; the others are answered.
        ``modalities`` (default: the predictor's) are the ones the answers may use. ``perceived``:
        each clip's Perception (or its error) already made elsewhere with this predictor's
        perception settings (``analyze --engine ray``), instead of its own perceiver's."""
        chosen = parse_modalities(modalities) if modalities is not None else self.modalities
        subs = list(subtitles) if subtitles is not None else [None] * len(videos)
        nms = list(names) if names is not None else [None] * len(videos)
        given = list(perceived) if perceived is not None else [None] * len(videos)
        if len(subs) != len(videos) or len(nms) != len(videos) or len(given) != len(videos):
            raise EmotionLlamaError(
                "analyze_many: give one subtitle, name and perception per video (or none)"
            )
        from emotion_llama.errors import MediaError

        with self._lock:
            staged: list[Perceived | EmotionLlamaError] = []
            for video, sub, nm, done in zip(videos, subs, nms, given, strict=True):
                try:
                    if isinstance(done, BaseException):
                        raise done
                    staged.append(self._perceive(video, sub, nm, chosen, done))
                except EmotionLlamaError as exc:
                    staged.append(exc)
                except (OSError, ValueError, EOFError) as exc:  # a decoder's own error: still this clip's
                    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    staged.append(MediaError(f"{video}: not a readable video ({detail})"))
            ok = [s for s in staged if isinstance(s, Perceived)]
            it = iter(self._answerer().answer(ok, question))
            return [next(it) if isinstance(s, Perceived) else s for s in staged]

    def stream(
        self,
        video: str | Path,
        *,
        subtitle: str | None = None,
        question: str | None = None,
        name: str | None = None,
        modalities: str | Sequence[str] | None = None,
    ) -> Iterator[Event]:
        """One clip as events: its clues and label first, then the reasoning piece by piece, then
        the complete result. Errors of the clip (a broken file...) are raised before any event."""
        with self._lock:
            chosen = parse_modalities(modalities) if modalities is not None else self.modalities
            clip = self._perceive(video, subtitle, name, chosen)
            yield from self._answerer().stream(clip, question)

    # -- the full model on clip inputs (video-free: pre-extracted features work too) --------------
    def predict_clips(
        self, clips: Sequence[Any]
    ) -> tuple[list[str | None], list[dict[str, float] | None], list[str]]:
        """Labels (and their probabilities when scored) of :class:`ClipInput` s, in one batch."""
        model = self._model_answerer("predict_clips")
        with self._lock:
            return model.predict_clips(clips)

    def reason_clips(self, clips: Sequence[Any], question: str | None = None) -> list[str]:
        """The reasoning prompt (or ``question`` as the instruction) answered for each clip."""
        model = self._model_answerer("reason_clips")
        with self._lock:
            return model.reason_clips(clips, question)

    def _scorer(self) -> Any:
        return self._model_answerer("the label scorer").scorer()

    # -- internals --------------------------------------------------------------------------------
    def _answerer(self) -> Answerer:
        if self.answerer is None:
            raise EmotionLlamaError("this predictor has no answerer loaded")
        return self.answerer

    def _model_answerer(self, what: str) -> ModelAnswerer:
        if not isinstance(self.answerer, ModelAnswerer):
            raise EmotionLlamaError(f"{what} needs the full model (start the predictor with model_dir)")
        return self.answerer

    def _perceive(
        self,
        video: str | Path,
        subtitle: str | None,
        name: str | None,
        modalities: Sequence[str],
        given: Any = None,
    ) -> Perceived:
        """Perception (of the chosen modalities only; ``given``: made already), the clue record
        and (with a describer) the visual objective of one clip."""
        from emotion_llama.annotate.records import clue_record, describe_peak
        from emotion_llama.perception.pipeline import restrict_to

        t0 = time.perf_counter()
        if given is not None and name is not None:
            given = replace(given, name=name)
        made = given if given is not None else self.perceiver(video, subtitle=subtitle, name=name)
        perception = restrict_to(made, modalities)
        t1 = time.perf_counter()
        record = clue_record(perception, label_set=self.label_set)
        record["inputs"] = {"modalities": list(modalities)}
        t2 = time.perf_counter()
        # "perception" holds the clues too (as it always has); "clues" is their share of it
        timings = {"perception": t2 - t0, "clues": t2 - t1}
        t3 = time.perf_counter()
        if describe_peak(record, perception, self.describer):
            timings["vlm"] = time.perf_counter() - t3
        return Perceived(perception, record, timings)
