"""The service's endpoints: ``GET /health``, ``GET /metrics`` and ``GET /v1/models``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from emotion_llama.serve.responses import SafeJSON
from emotion_llama.serve.routes.deps import State

router = APIRouter()


@router.get("/health")
def health(state: State) -> Response:
    p = state.predictor
    body = {
        "status": state.status,
        "model": p.model_id if p else None,
        "kind": p.kind if p else None,
        "error": state.load_error,
        "queue_depth": state.limiter.waiting,
        "in_flight": state.limiter.running,
        "max_queue": state.settings.max_queue,
        "batch_jobs": state.jobs.counts(),
    }
    return SafeJSON(body, status_code=200 if state.status == "ok" else 503)


@router.get("/metrics")
def metrics(state: State) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
def models(state: State) -> Response:
    p = state.require_predictor()
    model = {
        "id": p.model_id,
        "object": "model",
        "created": 0,
        "owned_by": "emotion-llama",
        "kind": p.kind,
        "backend": p.backend_name,
    }
    return SafeJSON({"object": "list", "data": [model]})
