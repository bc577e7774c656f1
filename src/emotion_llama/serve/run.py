"""Running an app of :func:`~emotion_llama.serve.app.create_app` under uvicorn: with its connection
limits (:func:`uvicorn_config`), until a signal (:func:`serve_forever`), or in a thread
(:func:`run_in_thread`)."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import FastAPI

from emotion_llama.serve.limits import limited_protocol


def serve_forever(app: FastAPI, *, host: str, port: int, log_level: str = "info") -> None:
    """uvicorn, with Ctrl-C / SIGTERM first turning new /v1 requests into 503 while the running
    ones finish."""
    import uvicorn

    state = app.state.serve

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            state.request_shutdown()
            super().handle_exit(sig, frame)

    config = uvicorn_config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)
    Server(config).run()


def uvicorn_config(app: FastAPI, **options: Any) -> Any:
    """``uvicorn.Config`` for ``app``; for an app of :func:`create_app`, with its connection limits
    (:class:`~emotion_llama.serve.limits.LimitedH11Protocol`: the head deadline, the connection cap)."""
    import uvicorn

    state = getattr(app.state, "serve", None)
    if state is not None:
        s = state.settings
        options.setdefault(
            "http", limited_protocol(head_timeout_s=s.head_timeout_s, max_connections=s.max_connections)
        )
    return uvicorn.Config(app, **options)


def run_in_thread(
    app: FastAPI, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[Any, threading.Thread, int]:
    """Start uvicorn for ``app`` in a daemon thread (tests, benchmarks, notebooks); returns the
    server (set ``server.should_exit = True`` and join the thread to stop), the thread and the
    port it listens on (a free one for ``port=0``)."""
    import socket

    import uvicorn

    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.02)
    return server, thread, port
