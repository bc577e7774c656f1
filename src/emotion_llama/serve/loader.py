"""The server's model (:class:`ModelSlot`): a predictor given ready, or loaded in a thread at start
(the server answers 503 until then), with its micro-batcher, and the server's status: loading, ok,
error (the load failed) or shutting down."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Literal

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.serve.errors import ApiError, unavailable
from emotion_llama.serve.predictor import MicroBatcher, Predictor

log = logging.getLogger("emotion_llama.serve")

Status = Literal["loading", "ok", "error", "shutting_down"]


class ModelSlot:
    """``predictor`` or, when it is a function, what it loads; a predictor it loaded is its to
    close. ``max_batch > 1`` puts a :class:`MicroBatcher` in front of it."""

    def __init__(
        self, predictor: Predictor | Callable[[], Predictor], *, max_batch: int, batch_wait_s: float
    ) -> None:
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.predictor: Predictor | None = predictor if isinstance(predictor, Predictor) else None
        self._loader = None if self.predictor is not None else predictor
        self.status: Status = "ok" if self.predictor is not None else "loading"
        self.load_error: str | None = None
        self.batcher: MicroBatcher | None = None
        if self.predictor is not None:
            self._start_batcher(self.predictor)

    def start(self) -> None:
        """Start loading (in a daemon thread), when there is anything to load."""
        if self._loader is not None:
            threading.Thread(target=self._load, name="predictor-load", daemon=True).start()

    def _load(self) -> None:
        assert self._loader is not None
        try:
            predictor = self._loader()
        except Exception as exc:
            log.exception("the model failed to load")
            self.load_error = str(exc) if isinstance(exc, EmotionLlamaError) else type(exc).__name__
            if self.status == "loading":
                self.status = "error"
            return
        self._start_batcher(predictor)
        self.predictor = predictor
        if self.status == "loading":
            self.status = "ok"

    def _start_batcher(self, predictor: Predictor) -> None:
        if self.max_batch > 1:
            self.batcher = MicroBatcher(predictor, max_batch=self.max_batch, max_wait_s=self.batch_wait_s)

    def ready_error(self) -> ApiError | None:
        """The 503 to answer now, or ``None`` when the model is ready."""
        if self.status == "ok":
            return None
        if self.status == "loading":
            return unavailable("the model is still loading; retry shortly", retry_after=10)
        if self.status == "error":
            return unavailable(f"the model failed to load: {self.load_error}")
        return unavailable("the server is shutting down")

    def require(self) -> Predictor:
        """The predictor; the 503 of :meth:`ready_error` when it is not ready."""
        err = self.ready_error()
        if err is not None or self.predictor is None:
            raise err or unavailable("the model is not loaded")
        return self.predictor

    async def close(self) -> None:
        """Close the batcher (in a worker thread: it waits for its batch), and the predictor when
        it was loaded here."""
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.close)
        if self._loader is not None and self.predictor is not None:
            self.predictor.close()
