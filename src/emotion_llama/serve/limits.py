"""Limits on what a client may hold of the server: time to send a request head, pace of a request
body, open connections, request bodies read at once.

Two layers, because uvicorn has no read deadlines of its own:

- **The connection** (:class:`LimitedH11Protocol`, uvicorn's h11 protocol with a timer): whenever no
  request of the connection is being answered (just opened, or its last response sent) the client
  has ``head_timeout_s`` to complete the next request head, else the connection is closed (with a
  408 when part of a head came). The same timer bounds the draining of a body the server answered
  early (a 413 or 401 before the body was read): uvicorn would read and drop it as long as it
  comes. Connections beyond ``max_connections`` get a 503 and are closed as they are accepted.
  This has to sit in the protocol: the ASGI app only hears of a request once its head is complete.
- **The body** (:class:`BodyClock`, :class:`BodySlots`, used by the app's gate around ``receive``):
  once the app starts reading a body it must not pause longer than ``body_timeout_s`` and must
  average ``body_min_rate`` after its first ``body_timeout_s``, else 408 (and the connection is
  closed); at most ``max_body_reads`` bodies are read at once, others wait ``body_wait_s`` for a
  turn, then 429. Timing it in the app measures only what the client owes: while the app is not
  reading (its turn has not come, or it is busy with the last piece) the client is not counted slow.

The protocol is uvicorn's own ``H11Protocol`` (h11 also caps a request head at 16 KiB), so the
server never depends on which optional parser (httptools) happens to be installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from emotion_llama.serve.errors import ApiError, rate_limited

log = logging.getLogger("emotion_llama.serve")


# -- the connection --------------------------------------------------------------------------------
def raw_error(status: int, reason: str, message: str, code: str, type: str, **headers: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 error response in the API's JSON shape, for the
    protocol to write where no ASGI app is involved."""
    body = json.dumps({"error": {"message": message, "type": type, "code": code}}).encode()
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close"]  # fmt: skip
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a head deadline and a connection cap (see the module's text).
    Use :func:`limited_protocol` for a class with the limits filled in."""

    #: Seconds the client has to complete a request head while none of its requests is answered;
    #: ``None`` or 0: no limit.
    head_timeout_s: float | None = 10.0
    #: Open connections of the server at once (all of this class); more are refused with 503.
    max_connections: int | None = None
    _last_refusal_log = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    # A request is in flight from its complete head (uvicorn makes its cycle) to its response's end.
    def _in_flight(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _await_head(self) -> None:
        self._stop_head_timer()
        if self.head_timeout_s:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._in_flight():
            return
        # Part of a next head came (rather than nothing, or the rest of a body answered early).
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self.transport.write(
                raw_error(408, "Request Timeout",
                          f"the request head did not arrive within {self.head_timeout_s:g} s",
                          "request_timeout", "invalid_request_error")
            )  # fmt: skip
        self.transport.close()

    def _refuse(self) -> None:
        now = time.monotonic()
        if now - LimitedH11Protocol._last_refusal_log > 10:  # not once per connection of a flood
            LimitedH11Protocol._last_refusal_log = now
            log.warning("refusing connections: %d open, the limit is %d", len(self.connections) - 1,
                        self.max_connections)  # fmt: skip
        self.transport.write(
            raw_error(503, "Service Unavailable",
                      f"the server has too many open connections (limit {self.max_connections}); retry later",
                      "too_many_connections", "server_error", Retry_After="1")
        )  # fmt: skip
        self.transport.close()

    # -- uvicorn's hooks
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self._refuse()
            return
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_flight():  # the head is complete: the app's body deadlines take over
            self._stop_head_timer()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._stop_head_timer()  # the connection is the websocket protocol's from now on
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request
        if not self.transport.is_closing() and not self._in_flight():
            self._await_head()


def limited_protocol(*, head_timeout_s: float | None, max_connections: int | None) -> type[H11Protocol]:
    """A :class:`LimitedH11Protocol` subclass with these limits, for ``uvicorn.Config(http=...)``."""
    return type(
        "LimitedH11Protocol",
        (LimitedH11Protocol,),
        {"head_timeout_s": head_timeout_s, "max_connections": max_connections},
    )


# -- the body --------------------------------------------------------------------------------------
class BodyClock:
    """The deadlines of one request body, from when the app starts reading it: no pause longer
    than ``timeout_s``, and in all at most ``timeout_s`` plus one second per ``min_rate`` bytes
    received (so after its first ``timeout_s`` the body must average ``min_rate`` bytes/s; a
    trickle is cut at about ``timeout_s``)."""

    def __init__(self, timeout_s: float, min_rate: float) -> None:
        self.timeout_s = timeout_s
        self.min_rate = min_rate
        self.start = self.last = time.monotonic()
        self.received = 0

    def left(self) -> float:
        """Seconds the next piece may take (<= 0: too late already)."""
        now = time.monotonic()
        left = self.last + self.timeout_s - now
        if self.min_rate > 0:
            left = min(left, self.start + self.timeout_s + self.received / self.min_rate - now)
        return left

    def got(self, n: int) -> None:
        if n > 0:
            self.received += n
            self.last = time.monotonic()

    def error(self) -> ApiError:
        rate = f" or averaged under {self.min_rate / 1024:g} KiB/s" if self.min_rate > 0 else ""
        return ApiError(
            408,
            f"the request body came too slowly (it paused over {self.timeout_s:g} s{rate}); "
            f"{self.received} bytes arrived in {time.monotonic() - self.start:.1f} s",
            code="request_timeout",
            headers={"Connection": "close"},  # the rest of the body is not waited for
        )


class BodySlots:
    """At most ``n`` request bodies read at once; a request waits for a turn (first come, first
    served) at most ``wait_s`` seconds, then gets 429."""

    def __init__(self, n: int, wait_s: float) -> None:
        self.n = max(1, n)
        self.wait_s = max(0.0, wait_s)
        self.reading = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.reading < self.n and not self._waiters:
            self.reading += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, self.wait_s)  # a turn handed over counts as reading
        except TimeoutError:
            raise rate_limited(
                f"the server is reading {self.n} request bodies already; retry shortly", "busy", 1
            ) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # cancelled right as its turn came
                self.release()
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def release(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)  # the turn passes on: ``reading`` stays
                return
        self.reading -= 1
