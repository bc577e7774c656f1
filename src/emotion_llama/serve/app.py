"""The HTTP API: one loaded :class:`Predictor` behind FastAPI, spoken to in OpenAI's chat format or
through plain upload endpoints. ``emotion-llama serve`` runs it; :func:`create_app` builds it for
tests and other hosts. docs/serving.md describes every endpoint and the security model.

Shape of a request: the connection's head deadline and cap (:mod:`.limits`) -> the gate
(:mod:`.middleware`: API key, 503 while loading or shutting down, body size on the header: the
JSON limit or the upload limit, a turn among the bodies read at once) -> the endpoint
(:mod:`.routes`) reads the body as it streams (:mod:`.bodies`: size counted again, its pace timed,
uploads written straight to the server's temp folder by :mod:`.multipart`) -> the input is
resolved and checked (:mod:`.videos`, :mod:`.inputs`) -> the :class:`Limiter` admits it (429 when
the queue is full) and runs the predictor in a worker thread (:mod:`.calls`; 504 past the timeout)
-> the result is shaped into JSON or server-sent events (:mod:`.responses`). Every error is
``{"error": {"message", "type", "code"}}`` (:mod:`.errors`); a crash is a 500 with a request id,
its traceback only in the server's log.

The app's parts live in :class:`ServeState` (:mod:`.state`); running it under uvicorn is
:mod:`.run`. The names below stay importable from here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from emotion_llama.serve.errors import ApiError, json_too_large, timeout_error, unavailable
from emotion_llama.serve.images import jpeg_data_url, render_images
from emotion_llama.serve.limiter import Limiter
from emotion_llama.serve.loader import Status
from emotion_llama.serve.metrics import Metrics
from emotion_llama.serve.middleware import JSON_PATHS, Gate, MetricsMiddleware, is_json_request
from emotion_llama.serve.predictor import Predictor
from emotion_llama.serve.protocol import (
    DEFAULT_QUESTIONS,
    ChatAsk,
    ChatCompletionRequest,
    ChatMessage,
    parse_chat,
    question_of,
)
from emotion_llama.serve.responses import (
    NO_REASONING,
    SafeJSON,
    add_error_handlers,
    answer_header,
    answer_text,
    emotion_field,
    emotion_summary,
    error_response,
)
from emotion_llama.serve.routes import analyze, chat, files, health
from emotion_llama.serve.routes.static import mount_static
from emotion_llama.serve.run import run_in_thread, serve_forever, uvicorn_config
from emotion_llama.serve.settings import BODY_OVERHEAD, STATIC_DIR, ServeSettings
from emotion_llama.serve.state import ServeState
from emotion_llama.serve.videos import Prepared

__all__ = [
    "BODY_OVERHEAD",
    "DEFAULT_QUESTIONS",
    "JSON_PATHS",
    "NO_REASONING",
    "STATIC_DIR",
    "ApiError",
    "ChatAsk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Gate",
    "Limiter",
    "Metrics",
    "MetricsMiddleware",
    "Prepared",
    "SafeJSON",
    "ServeSettings",
    "ServeState",
    "Status",
    "answer_header",
    "answer_text",
    "create_app",
    "emotion_field",
    "emotion_summary",
    "error_response",
    "is_json_request",
    "jpeg_data_url",
    "json_too_large",
    "parse_chat",
    "question_of",
    "render_images",
    "run_in_thread",
    "serve_forever",
    "timeout_error",
    "unavailable",
    "uvicorn_config",
]

log = logging.getLogger("emotion_llama.serve")


def create_app(
    predictor: Predictor | Callable[[], Predictor], settings: ServeSettings | None = None
) -> FastAPI:
    """The API around ``predictor`` (or a function that loads it: the server then starts at once
    and answers 503 until the model is loaded). The app owns a predictor it loaded (closed at
    shutdown), not one it was given."""
    settings = settings or ServeSettings()
    state = ServeState(predictor, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(title="emotion-llama", lifespan=lifespan, default_response_class=SafeJSON)
    app.state.serve = state
    add_error_handlers(app)
    for group in (health, files, chat, analyze):
        app.include_router(group.router)

    api_paths = [getattr(r, "path", "") for r in app.routes]
    app.add_middleware(Gate, settings=settings, ready_error=state.ready_error, body_slots=state.body_slots)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, routes=lambda: api_paths)
    mount_static(app, settings.static_dir)
    return app
