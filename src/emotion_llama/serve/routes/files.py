"""Uploads: ``POST /v1/files`` (a video kept for later requests as ``upload://ID``), and
``GET``/``DELETE /v1/files/{file_id}``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from emotion_llama.serve.bodies import read_form
from emotion_llama.serve.errors import ApiError
from emotion_llama.serve.multipart import one_file
from emotion_llama.serve.responses import SafeJSON
from emotion_llama.serve.routes.deps import State

router = APIRouter()


@router.post("/v1/files")
async def upload_file(request: Request, state: State) -> Response:
    form = await read_form(
        request, dest=state.uploads.root, max_file_bytes=state.settings.max_upload_bytes, max_files=1
    )
    part = one_file(form)
    prepared = await state.inputs.checked(part.path, part.filename, part.filename, temporary=True)
    prepared.on_release = None  # the store owns it now
    return SafeJSON(state.uploads.add(prepared.path, part.filename).info())


@router.get("/v1/files/{file_id}")
def file_info(file_id: str, state: State) -> Response:
    stored = state.uploads.lease(file_id)
    state.uploads.release(file_id)
    return SafeJSON(stored.info())


@router.delete("/v1/files/{file_id}")
def delete_file(file_id: str, state: State) -> Response:
    if not state.uploads.delete(file_id):
        raise ApiError(404, f"no uploaded file {file_id!r}", code="file_not_found")
    return SafeJSON({"id": file_id, "object": "file", "deleted": True})
