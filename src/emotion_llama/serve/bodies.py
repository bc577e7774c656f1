"""Request bodies read by the endpoints as they stream in (the gate of :mod:`.middleware` counts
and times them too): a JSON body up to its limit, a multipart form to disk."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import ClientDisconnect, Request

from emotion_llama.serve.errors import ApiError, json_too_large
from emotion_llama.serve.multipart import Form, read_multipart


async def read_json_body(request: Request, limit: int) -> bytearray:
    """The whole body, at most ``limit`` bytes (413 past it)."""
    buf = bytearray()
    try:
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise json_too_large(limit)
    except ClientDisconnect:  # nobody to answer; not a crash of ours
        raise ApiError(400, "the client went away before its body was in", code="invalid_request") from None
    return buf


async def read_form(request: Request, *, dest: Path, max_file_bytes: int, max_files: int) -> Form:
    """The request's ``multipart/form-data`` body, its files written to ``dest``."""
    return await read_multipart(
        request.stream(),
        request.headers.get("content-type", ""),
        dest,
        max_file_bytes=max_file_bytes,
        max_files=max_files,
    )
