"""Serve a local :class:`ChatLLM` over the OpenAI chat-completions protocol.

One loaded model can then be shared by several ``annotate`` runs, machines or tools that speak
the OpenAI protocol (the project's own :class:`OpenAIChatLLM` included)::

    emotion-llama serve-llm --llm offline --port 8001
    emotion-llama annotate videos/ --out data/ --llm openai:offline@http://127.0.0.1:8001/v1

Requests are answered one batch at a time (the model is not thread-safe); concurrent requests
wait in line. ``"stream": true`` answers with server-sent events in OpenAI's
``chat.completion.chunk`` format (the pieces of :func:`stream_chat`, then ``data: [DONE]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, Field

from emotion_llama.backends.llm import ChatLLM, ChatParams, stream_chat


class Message(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int = Field(default=256, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stream: bool = False


def create_app(llm: ChatLLM, model_name: str | None = None) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    name = model_name or llm.name
    lock = threading.Lock()

    app = FastAPI(title="emotion-llama LLM endpoint")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "emotion-llama"}]}

    @app.post("/v1/chat/completions", response_model=None)
    def chat(req: ChatRequest) -> dict[str, Any] | StreamingResponse:
        conv = [{"role": m.role, "content": m.content} for m in req.messages]
        params = ChatParams(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p)
        cid = f"chatcmpl-{uuid.uuid4().hex[:16]}"
        if req.stream:
            return StreamingResponse(
                _sse(llm, conv, params, lock, cid, name),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        with lock:
            answer = llm.chat_many([conv], params)[0]
        return {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
            ],
        }

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": name}

    return app


async def _sse(
    llm: ChatLLM, conv: list[dict[str, str]], params: ChatParams, lock: threading.Lock, cid: str, name: str
) -> AsyncIterator[str]:
    """The chunks of one streamed answer. The model runs in a thread of its own that holds the lock
    until it is done or the client has gone (checked between pieces), so a dropped connection never
    leaves the lock taken."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()
    created = int(time.time())

    def post(item: tuple[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def produce() -> None:
        try:
            with lock:
                pieces = stream_chat(llm, conv, params)
                try:
                    for piece in pieces:
                        post(("piece", piece))
                        if stop.is_set():
                            break
                finally:
                    close = getattr(pieces, "close", None)
                    if close is not None:
                        close()
        except Exception as exc:
            post(("error", f"{type(exc).__name__}: {exc}"))
        finally:
            post(("end", None))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        body = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    threading.Thread(target=produce, name="llm-stream", daemon=True).start()
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, value = await queue.get()
            if kind == "end":
                break
            if kind == "error":
                error = {"message": value, "type": "server_error", "code": "backend_error"}
                yield f"data: {json.dumps({'error': error})}\n\n"
                return
            if value:
                yield chunk({"content": value})
        yield chunk({}, "stop")
        yield "data: [DONE]\n\n"
    finally:
        stop.set()
