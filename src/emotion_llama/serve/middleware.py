"""The ASGI middleware in front of every endpoint: :class:`Gate` (the API key, 503 while the model
is not ready, the body's size limit, turn and pace) and :class:`MetricsMiddleware` (requests
counted by route). They are given what they check (settings, callables, the body slots), not the
server's state.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emotion_llama.serve.errors import ApiError, json_too_large, too_large
from emotion_llama.serve.limits import BodyClock, BodySlots
from emotion_llama.serve.metrics import Metrics
from emotion_llama.serve.responses import error_response
from emotion_llama.serve.settings import ServeSettings

#: Endpoints whose body is JSON (any body sent with a JSON Content-Type counts too).
JSON_PATHS = frozenset({"/v1/chat/completions"})


def is_json_request(path: str, content_type: str) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    return path in JSON_PATHS or ctype == "application/json" or ctype.endswith("+json")


class Gate:
    """Before any endpoint: API key on /v1, 503 while the model is not ready, the body size on the
    Content-Length header (the JSON limit for JSON, else the upload limit); then a turn to read the
    body (:class:`BodySlots`), and while it is read its size is counted again and its pace timed
    (:class:`BodyClock`): 413 as soon as it passes the limit, 408 when it comes too slowly."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: ServeSettings,
        ready_error: Callable[[], ApiError | None],
        body_slots: BodySlots,
    ) -> None:
        self.app = app
        self.settings = settings
        self.ready_error = ready_error
        self.body_slots = body_slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        s = self.settings
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        is_json = is_json_request(scope["path"], headers.get("content-type", ""))
        limit = s.max_json_bytes if is_json else s.max_body_bytes
        over = json_too_large if is_json else too_large
        length = headers.get("content-length", "")
        err = self._refusal(scope["path"], headers)
        if err is None and length:
            if not length.isdigit():
                err = ApiError(400, "bad Content-Length", code="invalid_request")
            elif int(length) > limit:
                err = over(limit)
        if err is not None:
            await error_response(err)(scope, receive, send)
            return
        if not (length.isdigit() and int(length) > 0) and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return

        try:
            await self.body_slots.acquire()
        except ApiError as exc:
            await error_response(exc)(scope, receive, send)
            return
        clock = BodyClock(s.body_timeout_s, s.body_min_rate_kib * 1024)
        body = GuardedBody(receive, self.body_slots, clock, limit, over, timed=s.body_timeout_s > 0)
        try:
            await self.app(scope, body.receive, send)
        finally:
            body.done_reading()

    def _refusal(self, path: str, headers: dict[str, str]) -> ApiError | None:
        """On /v1: 401 without the API key, else the 503 while the model is not ready."""
        if not (path == "/v1" or path.startswith("/v1/")):
            return None
        key = self.settings.api_key
        if key and not _authorized(headers.get("authorization", ""), key):
            return ApiError(
                401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                code="invalid_api_key", type="authentication_error",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        return self.ready_error()


@dataclass
class GuardedBody:
    """``receive`` of one request whose body is being read: it holds one of the ``slots`` until
    the body is in (or given up), times each piece by ``clock`` (when ``timed``: 408 past its
    deadlines) and counts the bytes (``over(limit)`` as soon as they pass ``limit``)."""

    _receive: Receive
    slots: BodySlots
    clock: BodyClock
    limit: int
    over: Callable[[int], ApiError]
    _: KW_ONLY
    timed: bool
    holding: bool = field(default=True, init=False)
    seen: int = field(default=0, init=False)

    def done_reading(self) -> None:
        if self.holding:
            self.holding = False
            self.slots.release()

    async def receive(self) -> Message:
        if not self.holding:  # the body is in (or was given up): plain receive, e.g. for disconnects
            return await self._receive()
        try:
            message = await self._next()
            if message["type"] == "http.request":
                n = len(message.get("body", b""))
                self.seen += n
                self.clock.got(n)
                if self.seen > self.limit:
                    raise self.over(self.limit)
                if not message.get("more_body", False):
                    self.done_reading()
            else:  # http.disconnect
                self.done_reading()
        except BaseException:
            self.done_reading()
            raise
        return message

    async def _next(self) -> Message:
        if not self.timed:
            return await self._receive()
        left = self.clock.left()
        if left <= 0:
            raise self.clock.error()
        try:
            return await asyncio.wait_for(self._receive(), left)
        except TimeoutError:
            raise self.clock.error() from None


def _authorized(header: str, key: str) -> bool:
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


class MetricsMiddleware:
    """Counts every request by route template (not the raw path: job ids would explode the series)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: Callable[[], Iterable[str]]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = self.metrics
        status = 500
        t0 = time.perf_counter()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        m.in_flight.inc()
        try:
            await self.app(scope, receive, capture)
        finally:
            m.in_flight.dec()
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                route = scope["path"] if scope["path"] in set(self.routes()) else "other"
            m.requests.labels(route, scope["method"], str(status)).inc()
            m.latency.labels(route).observe(time.perf_counter() - t0)
