"""The queue in front of the predictor: :class:`Limiter` runs at most ``max_concurrency`` calls at
once in worker threads and lets at most ``max_queue`` requests wait for a turn (429 beyond, 504
past a request's deadline)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from emotion_llama.serve.errors import ApiError, rate_limited, timeout_error


class Limiter:
    """At most ``max_concurrency`` predictor calls at once in worker threads, at most ``max_queue``
    requests waiting (FIFO) for a turn. A call's slot is held until its thread finishes, even when
    the request behind it timed out: the thread cannot be stopped, and the next call would only
    wait for the predictor's lock."""

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.max_concurrency = max(1, max_concurrency)
        self.max_queue = max(0, max_queue)
        self.running = 0
        self.waiting = 0
        self._waiting_rejectable = 0
        self._free = self.max_concurrency
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed: ApiError | None = None
        self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="predictor")
        #: Moving average of a call's duration, for Retry-After.
        self.mean_s = 5.0

    def retry_after(self) -> int:
        return max(1, math.ceil(self.mean_s * (self.waiting + 1) / self.max_concurrency))

    async def submit(
        self, fn: Callable[[], Any], *, deadline: float | None, exempt: bool = False
    ) -> asyncio.Future[Any]:
        """Wait for a slot, then start ``fn`` in a worker thread; its future. ``exempt`` (accepted
        batch jobs) waits even when the queue is full."""
        if self._closed is not None:
            raise self._closed
        if not exempt and self._free == 0 and self._waiting_rejectable >= self.max_queue:
            raise rate_limited(
                f"the server is busy ({self.running} running, {self.waiting} waiting); retry later",
                "queue_full",
                self.retry_after(),
            )
        await self._acquire(deadline, exempt)
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        self.running += 1
        try:
            fut = loop.run_in_executor(self._pool, fn)
        except BaseException:
            self.running -= 1
            self._release()
            raise

        def done(_: object) -> None:
            self.running -= 1
            self.mean_s = 0.8 * self.mean_s + 0.2 * (time.monotonic() - t0)
            self._release()

        fut.add_done_callback(done)
        return fut

    async def wait(self, fut: asyncio.Future[Any], deadline: float | None) -> Any:
        """The result of a submitted call; 504 past ``deadline`` (the call goes on in its thread)."""
        if deadline is None:
            return await asyncio.shield(fut)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            if fut.done() and fut.exception() is None:
                return fut.result()
            raise timeout_error() from None

    async def run(self, fn: Callable[[], Any], *, deadline: float | None, exempt: bool = False) -> Any:
        return await self.wait(await self.submit(fn, deadline=deadline, exempt=exempt), deadline)

    async def _acquire(self, deadline: float | None, exempt: bool) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.waiting += 1
        self._waiting_rejectable += not exempt
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise timeout_error() from None
        except BaseException:
            # Cancelled (client gone) right as the slot was handed over: hand it on.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()
            raise
        finally:
            self.waiting -= 1
            self._waiting_rejectable -= not exempt
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _release(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return
        self._free += 1

    def close(self, reason: ApiError) -> None:
        """Refuse new calls and fail the waiting ones with ``reason``; running ones finish."""
        self._closed = reason
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_exception(reason)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
