"""What the server answers, shaped: JSON that is always valid (:class:`SafeJSON`), errors in
OpenAI's shape (:func:`error_response` and the app's exception handlers), and the chat answers in
OpenAI's ``chat.completion`` object or its server-sent ``chat.completion.chunk`` events, with our
``emotion`` field.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from emotion_llama.serve.errors import ApiError, http_error, internal_error, validation_error
from emotion_llama.serve.images import peak_frame_jpeg
from emotion_llama.serve.predictor import Analysis

log = logging.getLogger("emotion_llama.serve")


# -- JSON ------------------------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """JSON-safe: NaN/inf as ``None``, numpy scalars and arrays as Python values."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy
        return plain(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


class SafeJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(plain(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


# -- errors ----------------------------------------------------------------------------------------
def error_response(err: ApiError) -> SafeJSON:
    return SafeJSON(err.body(), status_code=err.status, headers=err.headers)


def add_error_handlers(app: FastAPI) -> None:
    """Every error of ``app`` as an :class:`ApiError`'s JSON; a crash is a 500 with a request id,
    its traceback only in the server's log."""

    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return error_response(http_error(exc.status_code, exc.detail))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> Response:
        rid = uuid.uuid4().hex[:12]
        log.error("request %s %s failed (id %s)", request.method, request.url.path, rid, exc_info=exc)
        return error_response(internal_error(rid))


# -- chat answers ----------------------------------------------------------------------------------
NO_REASONING = "(no reasoning: the clip gave no usable clues)"


def answer_header(label: str | None) -> str:
    return f"Emotion: {label or 'unknown'}\n\n"


def answer_text(a: Analysis) -> str:
    """The assistant's message: the label, then the reasoning or the answer to the question."""
    return answer_header(a.label) + ((a.reasoning or "").strip() or NO_REASONING)


def emotion_summary(a: Analysis) -> dict[str, Any]:
    """The ``emotion`` field of chat responses: the structured result, clues summarised."""
    r = a.record
    keys = ("subtitle", "visual_expression", "audio_tone", "peak_time_s", "peak_AU_list", "candidate_labels",
            "label_source", "modalities", "conflict", "conflict_reason", "reasoning_source", "faithfulness",
            "missing")  # fmt: skip
    return {
        "name": a.name,
        "label": a.label,
        "scores": a.scores,
        "reasoning": a.reasoning,
        "question": a.question,
        "clues": {k: r.get(k) for k in keys},
        "timings_s": {k: round(v, 3) for k, v in a.timings.items()},
    }


async def emotion_field(a: Analysis, scrub: Callable[[Any], Any]) -> dict[str, Any]:
    """The ``emotion`` field of chat answers: :func:`emotion_summary` plus the AU timeline and the
    peak frame (so a page can draw both without a second request)."""
    out = emotion_summary(a)
    out["au_timeline"] = None if a.timeline is None else a.timeline.to_dict()
    out["peak_frame_jpeg"] = await peak_frame_jpeg(a)
    return scrub(out)


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


async def chat_completion(a: Analysis, model: str, scrub: Callable[[Any], Any]) -> dict[str, Any]:
    """OpenAI's ``chat.completion`` object for one analysis, with our ``emotion`` field."""
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer_text(a)},
                "finish_reason": "stop",
            }
        ],
        "emotion": await emotion_field(a, scrub),
    }


# -- server-sent events ----------------------------------------------------------------------------
def sse(body: Any) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def sse_error(err: ApiError) -> str:
    return f"data: {json.dumps(err.body())}\n\n"


async def chat_events(
    first: Any, rest: AsyncIterator[Any], model: str, scrub: Callable[[Any], Any]
) -> AsyncIterator[str]:
    """OpenAI's ``chat.completion.chunk`` events: the role, the label line, the reasoning pieces,
    a last chunk with ``finish_reason`` and our ``emotion`` field, then ``[DONE]``. An error after
    the response started comes as an ``{"error": ...}`` event (the openai package raises it)."""
    cid = completion_id()
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra,
        }  # fmt: skip
        return sse(plain(body))

    yield chunk({"role": "assistant", "content": ""})
    yield chunk({"content": answer_header(first.data.label)})
    wrote = False
    try:
        async for event in rest:
            if event.kind == "delta" and event.data:
                wrote = wrote or bool(str(event.data).strip())
                yield chunk({"content": str(event.data)})
            elif event.kind == "done":
                if not wrote:
                    yield chunk({"content": NO_REASONING})
                yield chunk({}, "stop", emotion=await emotion_field(event.data, scrub))
    except ApiError as exc:
        yield sse_error(exc)
        return
    except Exception:
        log.exception("a chat stream failed")
        yield sse_error(
            ApiError(500, "internal server error while streaming", code="internal_error", type="server_error")
        )
        return
    yield "data: [DONE]\n\n"
