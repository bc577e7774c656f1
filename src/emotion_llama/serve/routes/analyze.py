"""Structured analysis: ``POST /v1/analyze`` (one uploaded clip, answered with the full result and
its pictures), ``POST /v1/analyze/batch`` (many clips, a job answered 202) and
``GET /v1/analyze/batch/{job_id}``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.modalities import parse_modalities
from emotion_llama.serve.bodies import read_form
from emotion_llama.serve.errors import ApiError
from emotion_llama.serve.images import analysis_images
from emotion_llama.serve.jobs import JobItem
from emotion_llama.serve.multipart import Form, one_file
from emotion_llama.serve.protocol import question_of
from emotion_llama.serve.responses import SafeJSON
from emotion_llama.serve.routes.deps import State
from emotion_llama.serve.state import ServeState

router = APIRouter()


@router.post("/v1/analyze")
async def analyze(request: Request, state: State) -> Response:
    s = state.settings
    form = await read_form(request, dest=state.work, max_file_bytes=s.max_upload_bytes, max_files=1)
    part = one_file(form)
    prepared = await state.inputs.checked(
        part.path, Path(part.filename).stem or "video", part.filename, temporary=True
    )
    try:
        modalities = parse_modalities(form.first("modalities")) if form.first("modalities") else None
    except EmotionLlamaError as exc:
        prepared.release()
        raise ApiError(400, f"modalities: {exc}", code="invalid_request") from None
    a = await state.calls.analyze(
        prepared,
        subtitle=(form.first("subtitle") or "").strip() or None,
        question=question_of(form.first("question")),
        modalities=modalities,
    )
    out = state.inputs.scrub(a.to_dict(with_timeline=True), prepared)
    out["model"] = state.predictor.model_id if state.predictor else None
    out["peak_frame_jpeg"], out["au_timeline_png"] = await analysis_images(a, state.work)
    return SafeJSON(out)


@router.post("/v1/analyze/batch", status_code=202)
async def analyze_batch(request: Request, state: State) -> Response:
    s = state.settings
    state.require_predictor()
    form = await read_form(
        request, dest=state.work, max_file_bytes=s.max_upload_bytes, max_files=s.max_batch_files
    )
    if not form.files:
        raise ApiError(400, "send one or more files in 'file' parts", code="missing_file")
    subs = form.fields.get("subtitle", [])
    if subs and len(subs) != len(form.files):
        form.discard()
        raise ApiError(400, "give one 'subtitle' per file, in order, or none", code="invalid_request")
    job = state.runner.submit(await _job_items(state, form, subs), question_of(form.first("question")))
    body = job.to_dict()
    return SafeJSON(body, status_code=202, headers={"Location": body["status_url"]})


@router.get("/v1/analyze/batch/{job_id}")
def batch_status(job_id: str, state: State) -> Response:
    return SafeJSON(state.jobs.get(job_id).to_dict())


async def _job_items(state: ServeState, form: Form, subs: list[str]) -> list[JobItem]:
    """The form's files as a job's items: each sniffed, those that are not videos failed already."""
    items: list[JobItem] = []
    for k, part in enumerate(form.files):
        name = Path(part.filename).stem or f"file{k}"
        try:
            prepared = await state.inputs.checked(part.path, name, part.filename, temporary=True)
        except ApiError as exc:
            error = {"message": exc.message, "code": exc.code}
            items.append(JobItem(name, None, status="error", error=error))
            continue
        subtitle = (subs[k].strip() or None) if subs else None
        items.append(JobItem(name, prepared.path, subtitle=subtitle, filename=part.filename))
    return items
