"""The API's errors: :class:`ApiError` (answered as OpenAI-style JSON, ``{"error": {"message",
"type", "code"}}``), the errors several modules raise, and the mapping of other exceptions (HTTP
errors of the framework, validation errors, crashes, the predictor's errors) onto it. No FastAPI
here: :mod:`.responses` turns an :class:`ApiError` into a response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


class ApiError(Exception):
    """An error answered as OpenAI-style JSON: ``{"error": {"message", "type", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}


# -- the errors of several modules -----------------------------------------------------------------
def forbidden(message: str, code: str) -> ApiError:
    return ApiError(403, message, code=code, type="permission_error")


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request is larger than the server's limit of {limit / 2**20:.0f} MiB",
        code="payload_too_large",
    )


def json_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the JSON body is larger than the server's limit of {limit / 2**20:g} MiB "
        "(send big videos to POST /v1/files and refer to them as upload://ID)",
        code="payload_too_large",
    )


def timeout_error() -> ApiError:
    return ApiError(
        504, "the request took longer than the server's timeout", code="timeout", type="timeout_error"
    )


def rate_limited(message: str, code: str, retry_after: int) -> ApiError:
    """429: the server cannot take this now; the client may retry after ``retry_after`` seconds."""
    return ApiError(
        429, message, code=code, type="rate_limit_error", headers={"Retry-After": str(retry_after)}
    )


def unavailable(message: str, retry_after: int | None = None) -> ApiError:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return ApiError(503, message, code="unavailable", type="server_error", headers=headers)


# -- other exceptions as ApiErrors -----------------------------------------------------------------
def http_error(status: int, detail: Any) -> ApiError:
    """A framework's HTTP error (unknown route, wrong method...)."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, f"http_{status}")
    message = detail if isinstance(detail, str) else "request failed"
    return ApiError(status, message, code=code)


def validation_error(errors: Iterable[Any]) -> ApiError:
    """A 400 naming the first five problems of a request that failed validation."""
    parts = []
    for e in list(errors)[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where or 'body'}: {e.get('msg', 'invalid')}")
    return ApiError(400, "invalid request: " + "; ".join(parts), code="invalid_request")


def internal_error(request_id: str) -> ApiError:
    """A crash, as the client sees it: no traceback, a request id to find it in the server's log."""
    return ApiError(
        500,
        f"internal server error (request id {request_id}; the details are in the server's log)",
        code="internal_error",
        type="server_error",
    )


def predictor_error(exc: BaseException, clean: Callable[[str], str]) -> ApiError:
    """A predictor's error on a clip (``clean`` takes the server's paths out of its message): 502
    when the LLM backend failed, else 422 (the video)."""
    from emotion_llama.backends.llm import BackendError

    message = clean(str(exc))
    if isinstance(exc, BackendError):
        return ApiError(502, message, code="backend_error", type="server_error")
    return ApiError(422, message, code="invalid_video")
