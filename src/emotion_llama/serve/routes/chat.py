"""``POST /v1/chat/completions``: OpenAI's chat format, answered in one JSON object or streamed as
server-sent events."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from emotion_llama.serve.bodies import read_json_body
from emotion_llama.serve.errors import validation_error
from emotion_llama.serve.protocol import ChatCompletionRequest, parse_chat
from emotion_llama.serve.responses import SafeJSON, chat_completion, chat_events
from emotion_llama.serve.routes.deps import State

router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/v1/chat/completions")
async def chat(request: Request, state: State) -> Response:
    body = await read_json_body(request, state.settings.max_json_bytes)
    try:
        req = ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None
    del body
    ask, stream = parse_chat(req), req.stream
    del req  # the parsed messages cost many times the body: not kept while the request waits
    model = state.require_predictor().model_id
    prepared = await state.inputs.prepare(ask.video)

    def scrub(value: object) -> object:
        return state.inputs.scrub(value, prepared)

    if stream:
        first, rest = await state.calls.stream(prepared, subtitle=ask.subtitle, question=ask.question)
        return StreamingResponse(
            chat_events(first, rest, model, scrub), media_type="text/event-stream", headers=SSE_HEADERS
        )
    a = await state.calls.analyze(prepared, subtitle=ask.subtitle, question=ask.question)
    return SafeJSON(await chat_completion(a, model, scrub))
