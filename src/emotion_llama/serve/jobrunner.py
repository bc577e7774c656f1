"""The worker of the batch jobs (:class:`JobRunner`): jobs of :class:`~.jobs.JobStore` one after
another, each job's files in chunks of ``chunk`` through :meth:`Predictor.analyze_many` (one LLM
batch per chunk), a file's error in its place. It is given what it needs as callables: the
predictor (or a 503), a way to run a call (the limiter, past a full queue), the error mapping,
the path scrubbing and a counter of the files analysed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.serve.errors import ApiError
from emotion_llama.serve.jobs import Job, JobItem, JobStore
from emotion_llama.serve.predictor import Predictor
from emotion_llama.serve.responses import plain
from emotion_llama.serve.videos import Prepared

log = logging.getLogger("emotion_llama.serve")


@dataclass
class JobRunner:
    jobs: JobStore
    _: KW_ONLY
    predictor: Callable[[], Predictor]
    run: Callable[[Callable[[], Any]], Awaitable[Any]]
    error: Callable[[BaseException, Prepared | None], ApiError]
    scrub: Callable[[Any, Prepared | None], Any]
    ok: Callable[[], None]
    chunk: int
    _queue: asyncio.Queue[str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.chunk = max(1, self.chunk)

    def start(self) -> asyncio.Task[None]:
        """The worker, as a task of the running loop (cancel it to stop)."""
        self._queue = asyncio.Queue()
        return asyncio.create_task(self._work())

    def submit(self, items: list[JobItem], question: str | None) -> Job:
        """A new job of ``items`` (those already failed are kept as they are), queued; done at once
        when no item is pending. When the store refuses it (429), the items' files are removed."""
        try:
            job = self.jobs.add(items, question)
        except ApiError:
            for i in items:
                if i.path is not None:
                    i.path.unlink(missing_ok=True)
            raise
        if all(i.status != "pending" for i in items):
            job.status, job.finished = "done", time.time()
        else:
            self.enqueue(job.id)
        return job

    def enqueue(self, job_id: str) -> None:
        assert self._queue is not None
        self._queue.put_nowait(job_id)

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = self.jobs.get(await self._queue.get())
            job.status, job.started = "running", time.time()
            pending = [i for i in job.items if i.status == "pending"]
            for start in range(0, len(pending), self.chunk):
                await self._run_chunk(pending[start : start + self.chunk], job.question)
            job.status, job.finished = "done", time.time()

    async def _run_chunk(self, items: list[JobItem], question: str | None) -> None:
        paths = [i.path for i in items if i.path is not None]
        try:
            predictor = self.predictor()

            def work() -> list[Any]:
                return predictor.analyze_many(
                    paths,
                    subtitles=[i.subtitle for i in items],
                    question=question,
                    names=[i.name for i in items],
                )

            results = await self.run(work)
            for item, r in zip(items, results, strict=True):
                shown = Prepared(item.path or Path(item.name), item.name, item.filename or item.name)
                if isinstance(r, EmotionLlamaError):
                    err = self.error(r, shown)
                    item.status, item.error = "error", {"message": err.message, "code": err.code}
                else:
                    self.ok()
                    item.status, item.result = "done", self.scrub(plain(r.to_dict()), shown)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, ApiError):
                err = exc
            elif isinstance(exc, EmotionLlamaError):
                err = self.error(exc, None)
            else:
                log.exception("batch chunk failed")
                err = ApiError(500, "internal error while analysing this file", code="internal_error")
            for item in items:
                item.status, item.error = "error", {"message": err.message, "code": err.code}
        finally:
            for item in items:
                if item.path is not None:
                    item.path.unlink(missing_ok=True)
                    item.path = None
