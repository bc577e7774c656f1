"""One app's server (:class:`ServeState`, ``app.state.serve``): its parts put together and started
and stopped with the app. The parts are modules of their own; this wires them to one another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from emotion_llama.serve.calls import PredictorCalls
from emotion_llama.serve.errors import ApiError, predictor_error, unavailable
from emotion_llama.serve.jobrunner import JobRunner
from emotion_llama.serve.jobs import JobStore
from emotion_llama.serve.limiter import Limiter
from emotion_llama.serve.limits import BodySlots
from emotion_llama.serve.loader import ModelSlot, Status
from emotion_llama.serve.metrics import Metrics
from emotion_llama.serve.predictor import Predictor
from emotion_llama.serve.settings import ServeSettings
from emotion_llama.serve.uploads import UploadStore, expire_forever
from emotion_llama.serve.videos import Prepared, VideoInputs
from emotion_llama.serve.workspace import make_workspace, remove_tree


class ServeState:
    """The model, the limiter, the temp folder, uploads, inputs, batch jobs and metrics of one app.

    - ``model`` (:class:`ModelSlot`): the predictor, its loading and the server's ``status``;
    - ``limiter`` (:class:`Limiter`): the queue in front of the predictor; ``body_slots``
      (:class:`BodySlots`): request bodies read at once;
    - ``tmp`` (removed at stop), its ``work`` folder and the ``uploads`` store;
    - ``inputs`` (:class:`VideoInputs`): videos made ready, paths scrubbed from answers;
    - ``calls`` (:class:`PredictorCalls`): analyses and streams; ``jobs`` and ``runner``: batch jobs;
    - ``metrics``.
    """

    def __init__(self, predictor: Predictor | Callable[[], Predictor], settings: ServeSettings) -> None:
        s = self.settings = settings
        self.model = ModelSlot(predictor, max_batch=s.max_batch, batch_wait_s=s.batch_wait_s)
        self.tmp, self.work, upload_dir = make_workspace(s.tmp_dir)
        self.uploads = UploadStore(upload_dir, ttl_s=s.upload_ttl_s, max_total=int(s.max_stored_mb * 2**20))
        self.jobs = JobStore(s.max_jobs)
        self.body_slots = BodySlots(s.max_body_reads, s.body_wait_s)
        self.limiter = Limiter(max(s.max_concurrency, s.max_batch), s.max_queue)
        self.metrics = Metrics(
            queue_depth=lambda: self.limiter.waiting,
            running=lambda: self.limiter.running,
            stored_bytes=self.uploads.total,
            job_counts=self.jobs.counts,
        )
        self.inputs = VideoInputs(s, uploads=self.uploads, work=self.work, tmp=self.tmp)
        self.calls = PredictorCalls(
            self.limiter,
            predictor=self.require_predictor,
            batcher=lambda: self.model.batcher,
            timeout_s=s.timeout_s,
            error=self.predictor_error,
            ok=lambda: self.metrics.prediction("ok"),
        )
        self.runner = JobRunner(
            self.jobs,
            predictor=self.require_predictor,
            run=lambda fn: self.limiter.run(fn, deadline=None, exempt=True),
            error=self.predictor_error,
            scrub=self.inputs.scrub,
            ok=lambda: self.metrics.prediction("ok"),
            chunk=s.batch_chunk,
        )
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the model
    @property
    def status(self) -> Status:
        return self.model.status

    @property
    def predictor(self) -> Predictor | None:
        return self.model.predictor

    @property
    def load_error(self) -> str | None:
        return self.model.load_error

    def ready_error(self) -> ApiError | None:
        return self.model.ready_error()

    def require_predictor(self) -> Predictor:
        return self.model.require()

    def predictor_error(self, exc: BaseException, prepared: Prepared | None) -> ApiError:
        """A predictor's error on a clip as the client gets it (counted), the server's paths out."""
        self.metrics.prediction("error")
        return predictor_error(exc, lambda text: self.inputs.clean_message(text, prepared))

    # -- life cycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(expire_forever(self.uploads)), self.runner.start()]
        self.model.start()

    def begin_shutdown(self) -> None:
        """From now on /v1 answers 503 and waiting requests are released with 503."""
        self.model.status = "shutting_down"
        self.limiter.close(unavailable("the server is shutting down"))

    def request_shutdown(self) -> None:
        """:meth:`begin_shutdown` from any thread or a signal handler."""
        self.model.status = "shutting_down"
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.begin_shutdown)

    async def stop(self) -> None:
        if self.status != "shutting_down":
            self.begin_shutdown()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.limiter.shutdown()
        await self.model.close()
        remove_tree(self.tmp)
