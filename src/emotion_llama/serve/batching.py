"""Micro-batching in front of a :class:`~emotion_llama.serve.predictor.Predictor`: requests from
several threads that arrive together go through :meth:`Predictor.analyze_many` as one batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.serve.answerers import Analysis


class BatchAnalyzer(Protocol):
    """What the batcher runs its batches through: :meth:`Predictor.analyze_many` (videos, then
    ``subtitles``, ``question`` and ``names`` by keyword; an error in the place of a failed clip)."""

    @property
    def analyze_many(self) -> Callable[..., list[Analysis | EmotionLlamaError]]: ...


@dataclass
class _Pending:
    video: str | Path
    subtitle: str | None
    question: str | None
    name: str | None
    future: Any  # concurrent.futures.Future[Analysis]
    modalities: tuple[str, ...] | None = None

    def same_call(self, other: _Pending) -> bool:
        """Whether the two can share one ``analyze_many`` call (one question, one modality set)."""
        return self.question == other.question and self.modalities == other.modalities


class MicroBatcher:
    """Requests that arrive together are answered together: callers in several threads call
    :meth:`analyze`; one worker thread takes the first waiting request, waits up to ``max_wait_s``
    for more (at most ``max_batch``, all with the same question and modalities) and runs them through
    :meth:`Predictor.analyze_many`, so the LLM or the model sees one batch instead of a queue of
    single prompts. Perception stays per clip; the gain is in the language model's stage."""

    def __init__(self, predictor: BatchAnalyzer, *, max_batch: int = 4, max_wait_s: float = 0.05) -> None:
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
        modalities: Sequence[str] | None = None,
    ) -> Analysis:
        from concurrent.futures import Future

        if self._closed:
            raise EmotionLlamaError("the predictor is shutting down")
        fut: Future[Analysis] = Future()
        chosen = tuple(modalities) if modalities is not None else None
        self._queue.put(_Pending(video, subtitle, question, name, fut, chosen))
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
                if item.same_call(first):
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
                    modalities=first.modalities,
                )
            except BaseException as exc:  # the whole call failed: every caller hears why
                results = [exc] * len(batch)
            for item, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
