"""Serve a local :class:`ChatLLM` over the OpenAI chat-completions protocol.

One loaded model can then be shared by several ``annotate`` runs, machines or tools that speak
the OpenAI protocol (the project's own :class:`OpenAIChatLLM` included)::

    emotion-llama serve-llm --llm offline --port 8001
    emotion-llama annotate videos/ --out data/ --llm openai:offline@http://127.0.0.1:8001/v1

Requests are answered one batch at a time (the model is not thread-safe); concurrent requests
wait in line.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from pydantic import BaseModel, Field

from emotion_llama.backends.llm import ChatLLM, ChatParams


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
    from fastapi import FastAPI, HTTPException

    name = model_name or llm.name
    lock = threading.Lock()

    app = FastAPI(title="emotion-llama LLM endpoint")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "emotion-llama"}]}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> dict[str, Any]:
        if req.stream:
            raise HTTPException(status_code=400, detail="streaming is not supported by this endpoint")
        conv = [{"role": m.role, "content": m.content} for m in req.messages]
        params = ChatParams(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p)
        with lock:
            answer = llm.chat_many([conv], params)[0]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
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
