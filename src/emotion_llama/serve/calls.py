"""The predictor's calls from the event loop (:class:`PredictorCalls`): one clip at a time through
the :class:`~.limiter.Limiter` (429 when the queue is full, 504 past the timeout), or through the
micro-batcher when there is one, and a stream's events carried from its worker thread to the loop
(:class:`ThreadStream`). The predictor's errors come back as :class:`ApiError` (422 or 502).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import KW_ONLY, dataclass
from typing import Any

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.serve.errors import ApiError, timeout_error
from emotion_llama.serve.limiter import Limiter
from emotion_llama.serve.predictor import Analysis, MicroBatcher, Predictor
from emotion_llama.serve.videos import Prepared

#: An exception of the predictor on a clip -> what the client gets.
ErrorMapper = Callable[[BaseException, Prepared | None], ApiError]


class ThreadStream:
    """A predictor's event iterator, run in a worker thread, read from the event loop: events,
    the error or the end are posted to a queue; :meth:`next` waits for one until ``deadline``
    (504 past it). Setting :attr:`stop` makes the thread give up after its next event."""

    def __init__(self, deadline: float, error: Callable[[BaseException], ApiError]) -> None:
        self.deadline = deadline
        self.error = error
        self.stop = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def _post(self, item: tuple[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (server stopped)
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def pump(self, events: Generator[Any, None, None]) -> None:
        """In the worker thread: post every event of ``events``, then its error or the end."""
        try:
            for event in events:
                self._post(("event", event))
                if self.stop.is_set():
                    break
        except BaseException as exc:
            self._post(("error", exc))
        finally:
            events.close()
            self._post(("end", None))

    async def next(self) -> tuple[str, Any]:
        try:
            return await asyncio.wait_for(self._queue.get(), max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            self.stop.set()
            raise timeout_error() from None

    def unwrap(self, item: tuple[str, Any]) -> Any:
        kind, value = item
        if kind == "error":
            if isinstance(value, EmotionLlamaError):
                raise self.error(value)
            raise value
        if kind == "end":
            raise RuntimeError("the predictor's stream ended without a result")
        return value

    async def first(self) -> Any:
        """The first event (its errors raise here)."""
        try:
            return self.unwrap(await self.next())
        except BaseException:
            self.stop.set()
            raise

    async def rest(self, on_end: Callable[[], None]) -> AsyncIterator[Any]:
        """The events after the first; ``on_end`` runs when the stream ended well."""
        try:
            while True:
                item = await self.next()
                if item[0] == "end":
                    on_end()
                    return
                yield self.unwrap(item)
        finally:
            self.stop.set()


@dataclass
class PredictorCalls:
    """The calls of one server: ``predictor`` gives the loaded predictor (or raises 503),
    ``batcher`` the micro-batcher (``None``: none), ``error`` maps a predictor's error on a clip,
    ``ok`` counts a call that succeeded."""

    limiter: Limiter
    _: KW_ONLY
    predictor: Callable[[], Predictor]
    batcher: Callable[[], MicroBatcher | None]
    timeout_s: float
    error: ErrorMapper
    ok: Callable[[], None]

    async def _submit(
        self, prepared: Prepared, work: Callable[[Predictor, MicroBatcher | None], Any], deadline: float
    ) -> asyncio.Future[Any]:
        """``work(predictor, batcher)`` started through the limiter; ``prepared`` is released when
        it is done (or at once, when it never starts)."""
        try:
            predictor = self.predictor()
            batcher = self.batcher()
            fut = await self.limiter.submit(lambda: work(predictor, batcher), deadline=deadline)
        except BaseException:
            prepared.release()
            raise
        fut.add_done_callback(lambda _: prepared.release())
        return fut

    async def analyze(
        self,
        prepared: Prepared,
        *,
        subtitle: str | None,
        question: str | None,
        modalities: tuple[str, ...] | None = None,
    ) -> Analysis:
        """One clip through the limiter; the input is released when the predictor is done with it.
        ``modalities``: what to answer from (``None``: the predictor's choice)."""
        deadline = time.monotonic() + self.timeout_s

        def work(predictor: Predictor, batcher: MicroBatcher | None) -> Analysis:
            target = batcher if batcher is not None else predictor
            return target.analyze(
                prepared.path, subtitle=subtitle, question=question, name=prepared.name, modalities=modalities
            )

        fut = await self._submit(prepared, work, deadline)
        try:
            result: Analysis = await self.limiter.wait(fut, deadline)
        except EmotionLlamaError as exc:
            raise self.error(exc, prepared) from None
        self.ok()
        return result

    async def stream(
        self, prepared: Prepared, *, subtitle: str | None, question: str | None
    ) -> tuple[Any, AsyncIterator[Any]]:
        """:meth:`Predictor.stream` in a worker thread: the first event (errors of the clip and the
        timeout raise here, before any byte of the response) and an iterator of the rest."""
        deadline = time.monotonic() + self.timeout_s
        events = ThreadStream(deadline, lambda exc: self.error(exc, prepared))

        def work(predictor: Predictor, _: MicroBatcher | None) -> None:
            events.pump(
                predictor.stream(prepared.path, subtitle=subtitle, question=question, name=prepared.name)
            )

        await self._submit(prepared, work, deadline)
        first = await events.first()
        return first, events.rest(self.ok)
