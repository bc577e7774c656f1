"""The HTTP API: one loaded :class:`Predictor` behind FastAPI, spoken to in OpenAI's chat format or
through plain upload endpoints. ``emotion-llama serve`` runs it; :func:`create_app` builds it for
tests and other hosts. docs/serving.md describes every endpoint and the security model.

Shape of a request: the connection's head deadline and cap (:mod:`.limits`) -> the gate (API key,
503 while loading or shutting down, body size on the header: the JSON limit or the upload limit,
a turn among the bodies read at once) -> the endpoint reads the body as it streams (size counted
again, its pace timed, uploads written straight to the server's temp folder) -> the input is
resolved and checked (:mod:`.security`) -> the
:class:`Limiter` admits it (429 when the queue is full) and runs the predictor in a worker thread
(504 past the timeout) -> the result is shaped into JSON or server-sent events. Every error is
``{"error": {"message", "type", "code"}}``; a crash is a 500 with a request id, its traceback only
in the server's log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import io
import json
import logging
import math
import re
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.serve.jobs import JobItem, JobStore
from emotion_llama.serve.limits import BodyClock, BodySlots, limited_protocol
from emotion_llama.serve.predictor import Analysis, MicroBatcher, Predictor
from emotion_llama.serve.security import (
    ApiError,
    Form,
    UploadStore,
    check_url,
    check_video_file,
    decode_data_url,
    display_name,
    download,
    read_multipart,
    remove_tree,
    resolve_local,
    too_large,
)

log = logging.getLogger("emotion_llama.serve")

STATIC_DIR = Path(__file__).parent / "static"
#: Room for multipart framing and form fields on top of the file size limit.
BODY_OVERHEAD = 1 << 20


@dataclass
class ServeSettings:
    """Everything ``emotion-llama serve`` can set; the defaults are the CLI's."""

    #: Folders whose files clients may name by path (``file://`` or absolute); none: paths refused.
    allow_roots: tuple[Path, ...] = ()
    #: Hosts videos may be downloaded from (``HOST``, ``HOST:PORT``, ``*.DOMAIN``); none: URLs refused.
    allow_url_hosts: tuple[str, ...] = ()
    #: Largest video (upload, download or data URL), in MiB; a request body may add 1 MiB to it.
    max_upload_mb: float = 200.0
    #: Predictor calls at once (the predictor itself runs one at a time).
    max_concurrency: int = 1
    #: Requests for /v1/analyze and chat (not streamed) that arrive together are answered in one
    #: batch of up to this many (:class:`MicroBatcher`); 1 turns batching off. At least this many
    #: requests are let through the queue at once, to be batched.
    max_batch: int = 4
    #: How long the first request of a batch waits for others, in seconds.
    batch_wait_s: float = 0.05
    #: Requests waiting for the predictor beyond those; more get 429.
    max_queue: int = 8
    #: Queue wait + predictor time of one request, in seconds; past it, 504.
    timeout_s: float = 600.0
    #: Bearer token required on /v1/*; ``None``: open.
    api_key: str | None = None
    #: Parent of the server's temp folder (uploads, downloads); ``None``: the system's.
    tmp_dir: Path | None = None
    #: How long ``POST /v1/files`` uploads are kept.
    upload_ttl_s: float = 3600.0
    #: All kept uploads together, in MiB.
    max_stored_mb: float = 2048.0
    download_timeout_s: float = 60.0
    #: Batch jobs kept in memory (finished ones are evicted oldest first).
    max_jobs: int = 32
    max_batch_files: int = 64
    #: Files per ``analyze_many`` call of a batch job.
    batch_chunk: int = 4
    #: The web page's folder, mounted at ``/`` when it exists.
    static_dir: Path | None = STATIC_DIR
    # -- what a client may hold of the server (:mod:`.limits`); 0 turns a time limit off
    #: Seconds a client has to send a complete request head, from the connection's opening or
    #: the end of its previous response; then the connection is closed (408 if part of a head came).
    head_timeout_s: float = 10.0
    #: Longest pause within a request body, in seconds; a body also has this long plus one second
    #: per ``body_min_rate_kib`` KiB it sent. Past either, 408 and the connection is closed.
    body_timeout_s: float = 30.0
    #: The slowest a body may come on average after its first ``body_timeout_s``, in KiB/s.
    body_min_rate_kib: float = 16.0
    #: Open connections at once (idle kept-alive ones too); more get 503 and are closed.
    max_connections: int = 256
    #: Largest JSON body (``/v1/chat/completions``, or any ``Content-Type: application/json``), in
    #: MiB: parsed, JSON costs up to ~25x its size in memory. Bigger videos go to ``/v1/files``.
    max_json_mb: float = 4.0
    #: Request bodies (uploads and JSON) read at once; more wait up to ``body_wait_s``, then 429.
    max_body_reads: int = 8
    body_wait_s: float = 10.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + BODY_OVERHEAD

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 2**20)


# -- JSON ------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-safe: NaN/inf as ``None``, numpy scalars and arrays as Python values."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy
        return _plain(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


class SafeJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(
            _plain(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()


def error_response(err: ApiError) -> SafeJSON:
    return SafeJSON(err.body(), status_code=err.status, headers=err.headers)


# -- the queue in front of the predictor -----------------------------------------------------------
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
            raise ApiError(
                429,
                f"the server is busy ({self.running} running, {self.waiting} waiting); retry later",
                code="queue_full",
                type="rate_limit_error",
                headers={"Retry-After": str(self.retry_after())},
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


def timeout_error() -> ApiError:
    return ApiError(
        504, "the request took longer than the server's timeout", code="timeout", type="timeout_error"
    )


def unavailable(message: str, retry_after: int | None = None) -> ApiError:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return ApiError(503, message, code="unavailable", type="server_error", headers=headers)


# -- metrics ---------------------------------------------------------------------------------------
class Metrics:
    """Prometheus metrics in a registry of their own (several apps can live in one process)."""

    def __init__(self, state: ServeState) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "emotion_llama_http_requests", "HTTP requests by route, method and status.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "emotion_llama_http_request_duration_seconds", "Time to answer a request (streams: to the end).",
            ["route"], registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
        )  # fmt: skip
        self.in_flight = Gauge(
            "emotion_llama_http_requests_in_flight", "HTTP requests being answered.", registry=r
        )
        self.predictions = Counter(
            "emotion_llama_predictions", "Predictor calls by outcome.", ["outcome"], registry=r
        )
        queue = Gauge("emotion_llama_queue_depth", "Requests waiting for the predictor.", registry=r)
        queue.set_function(lambda: state.limiter.waiting)
        busy = Gauge("emotion_llama_predictor_busy", "Predictor calls running now.", registry=r)
        busy.set_function(lambda: state.limiter.running)
        self.jobs = Gauge("emotion_llama_batch_jobs", "Batch jobs kept, by status.", ["status"], registry=r)
        stored = Gauge("emotion_llama_upload_store_bytes", "Bytes of kept uploads.", registry=r)
        stored.set_function(lambda: state.uploads.total())

    def render(self, state: ServeState) -> bytes:
        from prometheus_client import generate_latest

        for status, n in state.jobs.counts().items():
            self.jobs.labels(status).set(n)
        return generate_latest(self.registry)


# -- chat requests ---------------------------------------------------------------------------------
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    #: Our extension: the words spoken in the clip (replaces speech recognition).
    subtitle: str | None = None


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _default_questions() -> frozenset[str]:
    from emotion_llama.prompts import EMOTION_INSTRUCTION, EMOTION_INSTRUCTION_6, REASON_INSTRUCTIONS

    generic = (
        "What is the emotion of the person in the video?",
        "What emotion is the person in the video feeling?",
        "What emotion is this?",
        "What is the emotion?",
        "Analyze this video.",
        "Analyse this video.",
        "Analyze the video.",
        "Describe the emotion in this video.",
    )
    return frozenset(
        _norm(q) for q in (EMOTION_INSTRUCTION, EMOTION_INSTRUCTION_6, *REASON_INSTRUCTIONS, *generic)
    )


DEFAULT_QUESTIONS = _default_questions()


def question_of(text: str | None) -> str | None:
    """The user's question, or ``None`` when the text is empty or one of the standard emotion
    prompts (then the answer is the label and its reasoning)."""
    text = (text or "").strip()
    return None if not text or _norm(text) in DEFAULT_QUESTIONS else text


@dataclass(frozen=True)
class ChatAsk:
    video: str
    question: str | None
    subtitle: str | None


_SUBTITLE = re.compile(r"^\s*subtitle\s*:\s*", re.I)


def parse_chat(req: ChatCompletionRequest) -> ChatAsk:
    """The video (the last ``video_url`` part of any user message), the question (the text of the
    last user message) and the subtitle (the request's ``subtitle`` field, else a text part of the
    last user message that starts with ``Subtitle:``)."""
    video: str | None = None
    last_texts: list[str] = []
    subtitle = req.subtitle
    for m in req.messages:
        if m.role != "user":
            continue
        parts = [{"type": "text", "text": m.content}] if isinstance(m.content, str) else (m.content or [])
        texts: list[str] = []
        for p in parts:
            kind = p.get("type")
            if kind in ("video_url", "video"):
                ref = p.get(kind)
                url = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(url, str) or not url.strip():
                    raise ApiError(400, "a video_url part needs {'url': '...'}", code="invalid_video_url")
                video = url.strip()
            elif kind == "text":
                texts.append(str(p.get("text") or ""))
            elif kind in ("image_url", "input_image", "input_audio"):
                raise ApiError(400, f"content parts of type {kind!r} are not supported; send a video_url",
                               code="unsupported_content")  # fmt: skip
        last_texts = texts
    question_lines = []
    for t in last_texts:
        if _SUBTITLE.match(t):
            subtitle = subtitle if subtitle is not None else _SUBTITLE.sub("", t, count=1).strip()
        else:
            question_lines.append(t)
    if video is None:
        raise ApiError(
            400,
            "no video in the messages: add a content part "
            '{"type": "video_url", "video_url": {"url": "upload://ID | https://... | '
            'data:video/mp4;base64,... | file:///PATH"}}',
            code="missing_video",
        )
    return ChatAsk(video, question_of("\n".join(question_lines)), subtitle or None)


NO_REASONING = "(no reasoning: the clip gave no usable clues)"


def answer_header(label: str | None) -> str:
    return f"Emotion: {label or 'unknown'}\n\n"


def answer_text(a: Analysis) -> str:
    """The assistant's message: the label, then the reasoning or the answer to the question."""
    return answer_header(a.label) + ((a.reasoning or "").strip() or NO_REASONING)


def emotion_summary(a: Analysis) -> dict[str, Any]:
    """The ``emotion`` field of chat responses: the structured result, clues summarised."""
    r = a.record
    keys = ("subtitle", "visual_expression", "audio_tone", "peak_time_s", "peak_AU_list", "candidate_labels",
            "label_source", "modalities", "conflict", "conflict_reason", "reasoning_source", "faithfulness",
            "missing")  # fmt: skip
    return {
        "name": a.name,
        "label": a.label,
        "scores": a.scores,
        "reasoning": a.reasoning,
        "question": a.question,
        "clues": {k: r.get(k) for k in keys},
        "timings_s": {k: round(v, 3) for k, v in a.timings.items()},
    }


# -- the service -----------------------------------------------------------------------------------
@dataclass
class Prepared:
    """A video ready for the predictor: its path on the server, the clip's name, how the client
    named it (errors show that, never the server's paths) and what to do when done with it."""

    path: Path
    name: str
    shown: str
    on_release: Callable[[], None] | None = None

    def release(self) -> None:
        fn, self.on_release = self.on_release, None
        if fn is not None:
            fn()


Status = Literal["loading", "ok", "error", "shutting_down"]


class ServeState:
    """The loaded predictor, the limiter, uploads, jobs and metrics of one app."""

    def __init__(self, predictor: Predictor | Callable[[], Predictor], settings: ServeSettings) -> None:
        self.settings = settings
        self.predictor: Predictor | None = predictor if isinstance(predictor, Predictor) else None
        self._loader = None if self.predictor is not None else predictor
        self.status: Status = "ok" if self.predictor is not None else "loading"
        self.load_error: str | None = None
        if settings.tmp_dir is not None:
            settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="emotion-llama-serve-", dir=settings.tmp_dir))
        self.work = self.tmp / "work"
        self.work.mkdir()
        (self.tmp / "uploads").mkdir()
        self.uploads = UploadStore(
            self.tmp / "uploads", ttl_s=settings.upload_ttl_s, max_total=int(settings.max_stored_mb * 2**20)
        )
        self.jobs = JobStore(settings.max_jobs)
        self.body_slots = BodySlots(settings.max_body_reads, settings.body_wait_s)
        self.limiter = Limiter(max(settings.max_concurrency, settings.max_batch), settings.max_queue)
        self.batcher: MicroBatcher | None = None
        if self.predictor is not None:
            self._start_batcher(self.predictor)
        self.metrics = Metrics(self)
        self._job_queue: asyncio.Queue[str] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- life cycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._job_queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._cleanup_loop()), asyncio.create_task(self._job_worker())]
        if self._loader is not None:
            threading.Thread(target=self._load, name="predictor-load", daemon=True).start()

    def _load(self) -> None:
        assert self._loader is not None
        try:
            predictor = self._loader()
        except Exception as exc:
            log.exception("the model failed to load")
            self.load_error = str(exc) if isinstance(exc, EmotionLlamaError) else type(exc).__name__
            if self.status == "loading":
                self.status = "error"
            return
        self._start_batcher(predictor)
        self.predictor = predictor
        if self.status == "loading":
            self.status = "ok"

    def _start_batcher(self, predictor: Predictor) -> None:
        if self.settings.max_batch > 1:
            self.batcher = MicroBatcher(
                predictor, max_batch=self.settings.max_batch, max_wait_s=self.settings.batch_wait_s
            )

    def begin_shutdown(self) -> None:
        """From now on /v1 answers 503 and waiting requests are released with 503."""
        self.status = "shutting_down"
        self.limiter.close(unavailable("the server is shutting down"))

    def request_shutdown(self) -> None:
        """:meth:`begin_shutdown` from any thread or a signal handler."""
        self.status = "shutting_down"
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.begin_shutdown)

    async def stop(self) -> None:
        if self.status != "shutting_down":
            self.begin_shutdown()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.limiter.shutdown()
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.close)
        if self._loader is not None and self.predictor is not None:
            self.predictor.close()
        remove_tree(self.tmp)

    def ready_error(self) -> ApiError | None:
        if self.status == "ok":
            return None
        if self.status == "loading":
            return unavailable("the model is still loading; retry shortly", retry_after=10)
        if self.status == "error":
            return unavailable(f"the model failed to load: {self.load_error}")
        return unavailable("the server is shutting down")

    def require_predictor(self) -> Predictor:
        err = self.ready_error()
        if err is not None or self.predictor is None:
            raise err or unavailable("the model is not loaded")
        return self.predictor

    async def _cleanup_loop(self) -> None:
        period = max(1.0, min(60.0, self.settings.upload_ttl_s / 4))
        while True:
            await asyncio.sleep(period)
            self.uploads.expire()

    # -- inputs
    async def read_json_body(self, request: Request) -> bytearray:
        """The whole body, at most the JSON limit (the gate counts it too, and times it)."""
        limit = self.settings.max_json_bytes
        buf = bytearray()
        try:
            async for chunk in request.stream():
                buf += chunk
                if len(buf) > limit:
                    raise json_too_large(limit)
        except ClientDisconnect:  # nobody to answer; not a crash of ours
            raise ApiError(
                400, "the client went away before its body was in", code="invalid_request"
            ) from None
        return buf

    async def read_form(self, request: Request, *, dest: Path, max_files: int) -> Form:
        return await read_multipart(
            request.stream(),
            request.headers.get("content-type", ""),
            dest,
            max_file_bytes=self.settings.max_upload_bytes,
            max_files=max_files,
        )

    async def checked(self, path: Path, name: str, shown: str, *, temporary: bool) -> Prepared:
        """Sniff ``path``; a temporary file gets the container's extension and is removed on
        release (or at once when it is not a video)."""
        try:
            ext = await asyncio.to_thread(check_video_file, path)
        except BaseException:
            if temporary:
                path.unlink(missing_ok=True)
            raise
        if not temporary:
            return Prepared(path, name, shown)
        final = path.with_suffix(ext)
        path.rename(final)
        return Prepared(final, name, shown, lambda: final.unlink(missing_ok=True))

    async def prepare(self, url: str) -> Prepared:
        """A chat message's video reference -> a checked local file."""
        s = self.settings
        if url.startswith("upload://"):
            fid = url[len("upload://") :]
            stored = self.uploads.lease(fid)
            name = Path(stored.filename).stem or fid
            return Prepared(stored.path, name, stored.filename, lambda: self.uploads.release(fid))
        tmp = self.work / f"in-{uuid.uuid4().hex}"
        if url.startswith(("http://", "https://")):
            check_url(url, s.allow_url_hosts)
            shown = display_name(url.split("?", 1)[0], "download")
            await download(url, tmp, allowed=s.allow_url_hosts, max_bytes=s.max_upload_bytes,
                           timeout_s=s.download_timeout_s)  # fmt: skip
            return await self.checked(tmp, Path(shown).stem or "download", shown, temporary=True)
        if url.startswith("data:"):
            await asyncio.to_thread(decode_data_url, url, tmp, max_bytes=s.max_upload_bytes)
            return await self.checked(tmp, "video", "the data URL", temporary=True)
        if url.startswith("file:") or url.startswith("/"):
            path = resolve_local(url, s.allow_roots)
            return await self.checked(path, path.stem, url, temporary=False)
        scheme = url.split(":", 1)[0][:20] if ":" in url else ""
        raise ApiError(
            400,
            f"unsupported video reference{f' (scheme {scheme!r})' if scheme else ''}: use upload://ID, "
            "http(s)://, data:video/...;base64, file:///PATH or an absolute path",
            code="invalid_video_url",
        )

    def clean_message(self, text: str, prepared: Prepared | None = None) -> str:
        """A predictor message without the server's paths."""
        if prepared is not None:
            text = text.replace(str(prepared.path), prepared.shown)
        return text.replace(str(self.tmp), "<server temp>")

    def scrub(self, value: Any, prepared: Prepared | None) -> Any:
        """``value`` (a result's JSON) with the server's paths replaced as :meth:`clean_message` does."""
        if isinstance(value, str):
            return self.clean_message(value, prepared)
        if isinstance(value, dict):
            return {k: self.scrub(v, prepared) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v, prepared) for v in value]
        return value

    def predictor_error(self, exc: BaseException, prepared: Prepared | None) -> ApiError:
        from emotion_llama.backends.llm import BackendError

        self.metrics.predictions.labels("error").inc()
        message = self.clean_message(str(exc), prepared)
        if isinstance(exc, BackendError):
            return ApiError(502, message, code="backend_error", type="server_error")
        return ApiError(422, message, code="invalid_video")

    # -- predictor calls
    async def analyze(self, prepared: Prepared, *, subtitle: str | None, question: str | None) -> Analysis:
        """One clip through the limiter; the input is released when the predictor is done with it."""
        deadline = time.monotonic() + self.settings.timeout_s
        try:
            predictor = self.require_predictor()

            batcher = self.batcher

            def work() -> Analysis:
                if batcher is not None:
                    return batcher.analyze(
                        prepared.path, subtitle=subtitle, question=question, name=prepared.name
                    )
                return predictor.analyze(
                    prepared.path, subtitle=subtitle, question=question, name=prepared.name
                )

            fut = await self.limiter.submit(work, deadline=deadline)
        except BaseException:
            prepared.release()
            raise
        fut.add_done_callback(lambda _: prepared.release())
        try:
            result: Analysis = await self.limiter.wait(fut, deadline)
        except EmotionLlamaError as exc:
            raise self.predictor_error(exc, prepared) from None
        self.metrics.predictions.labels("ok").inc()
        return result

    async def stream(
        self, prepared: Prepared, *, subtitle: str | None, question: str | None
    ) -> tuple[Any, AsyncIterator[Any]]:
        """:meth:`Predictor.stream` in a worker thread: the first event (errors of the clip and the
        timeout raise here, before any byte of the response) and an iterator of the rest."""
        deadline = time.monotonic() + self.settings.timeout_s
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def post(item: tuple[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone (server stopped)
                loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            predictor = self.require_predictor()

            def work() -> None:
                events = predictor.stream(
                    prepared.path, subtitle=subtitle, question=question, name=prepared.name
                )
                try:
                    for event in events:
                        post(("event", event))
                        if stop.is_set():
                            break
                except BaseException as exc:
                    post(("error", exc))
                finally:
                    events.close()
                    post(("end", None))

            fut = await self.limiter.submit(work, deadline=deadline)
        except BaseException:
            prepared.release()
            raise
        fut.add_done_callback(lambda _: prepared.release())

        async def next_item() -> tuple[str, Any]:
            try:
                return await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                stop.set()
                raise timeout_error() from None

        def unwrap(item: tuple[str, Any]) -> Any:
            kind, value = item
            if kind == "error":
                if isinstance(value, EmotionLlamaError):
                    raise self.predictor_error(value, prepared)
                raise value
            if kind == "end":
                raise RuntimeError("the predictor's stream ended without a result")
            return value

        try:
            first = unwrap(await next_item())
        except BaseException:
            stop.set()
            raise

        async def rest() -> AsyncIterator[Any]:
            try:
                while True:
                    item = await next_item()
                    if item[0] == "end":
                        self.metrics.predictions.labels("ok").inc()
                        return
                    yield unwrap(item)
            finally:
                stop.set()

        return first, rest()

    # -- batch jobs
    async def _job_worker(self) -> None:
        assert self._job_queue is not None
        while True:
            job = self.jobs.get(await self._job_queue.get())
            job.status, job.started = "running", time.time()
            pending = [i for i in job.items if i.status == "pending"]
            size = max(1, self.settings.batch_chunk)
            for start in range(0, len(pending), size):
                await self._run_chunk(pending[start : start + size], job.question)
            job.status, job.finished = "done", time.time()

    async def _run_chunk(self, items: list[JobItem], question: str | None) -> None:
        paths = [i.path for i in items if i.path is not None]
        try:
            predictor = self.require_predictor()

            def work() -> list[Any]:
                return predictor.analyze_many(
                    paths,
                    subtitles=[i.subtitle for i in items],
                    question=question,
                    names=[i.name for i in items],
                )

            results = await self.limiter.run(work, deadline=None, exempt=True)
            for item, r in zip(items, results, strict=True):
                shown = Prepared(item.path or Path(item.name), item.name, item.filename or item.name)
                if isinstance(r, EmotionLlamaError):
                    err = self.predictor_error(r, shown)
                    item.status, item.error = "error", {"message": err.message, "code": err.code}
                else:
                    self.metrics.predictions.labels("ok").inc()
                    item.status, item.result = "done", self.scrub(_plain(r.to_dict()), shown)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, ApiError):
                err = exc
            elif isinstance(exc, EmotionLlamaError):
                err = self.predictor_error(exc, None)
            else:
                log.exception("batch chunk failed")
                err = ApiError(500, "internal error while analysing this file", code="internal_error")
            for item in items:
                item.status, item.error = "error", {"message": err.message, "code": err.code}
        finally:
            for item in items:
                if item.path is not None:
                    item.path.unlink(missing_ok=True)
                    item.path = None

    def enqueue(self, job_id: str) -> None:
        assert self._job_queue is not None
        self._job_queue.put_nowait(job_id)


# -- images of /v1/analyze -------------------------------------------------------------------------
def jpeg_data_url(frame: Any) -> str | None:
    """An (H, W, 3) RGB frame as a ``data:image/jpeg;base64,`` URL; ``None`` for ``None``."""
    if frame is None:
        return None
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


async def emotion_field(a: Analysis, scrub: Callable[[Any], Any]) -> dict[str, Any]:
    """The ``emotion`` field of chat answers: :func:`emotion_summary` plus the AU timeline and the
    peak frame (so a page can draw both without a second request)."""
    out = emotion_summary(a)
    out["au_timeline"] = None if a.timeline is None else a.timeline.to_dict()
    try:
        out["peak_frame_jpeg"] = await asyncio.to_thread(jpeg_data_url, a.peak_frame)
    except Exception:  # an extra: the answer stands without it
        log.exception("encoding the peak frame of %s failed", a.name)
        out["peak_frame_jpeg"] = None
    return scrub(out)


def render_images(a: Analysis, work: Path) -> tuple[str | None, str | None]:
    """The peak frame as a JPEG data URL and the AU timeline as a PNG data URL (``None`` each when
    the clip has none)."""
    jpeg = jpeg_data_url(a.peak_frame)
    png = None
    if a.timeline is not None and len(a.timeline):
        from emotion_llama.perception.action_units import plot_au_timeline

        peak = a.record.get("peak_index")
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            path = plot_au_timeline(a.timeline, Path(tmp) / "au.png", peak=peak, title=a.name)
            png = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    return jpeg, png


# -- middleware ------------------------------------------------------------------------------------
#: Endpoints whose body is JSON (any body sent with a JSON Content-Type counts too).
JSON_PATHS = frozenset({"/v1/chat/completions"})


def is_json_request(path: str, content_type: str) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    return path in JSON_PATHS or ctype == "application/json" or ctype.endswith("+json")


def json_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the JSON body is larger than the server's limit of {limit / 2**20:g} MiB "
        "(send big videos to POST /v1/files and refer to them as upload://ID)",
        code="payload_too_large",
    )


class Gate:
    """Before any endpoint: API key on /v1, 503 while the model is not ready, the body size on the
    Content-Length header (the JSON limit for JSON, else the upload limit); then a turn to read the
    body (:class:`BodySlots`), and while it is read its size is counted again and its pace timed
    (:class:`BodyClock`): 413 as soon as it passes the limit, 408 when it comes too slowly."""

    def __init__(self, app: ASGIApp, state: ServeState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        s = self.state.settings
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        err: ApiError | None = None
        if scope["path"] == "/v1" or scope["path"].startswith("/v1/"):
            if s.api_key and not _authorized(headers.get("authorization", ""), s.api_key):
                err = ApiError(
                    401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                    code="invalid_api_key", type="authentication_error",
                    headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            else:
                err = self.state.ready_error()
        is_json = is_json_request(scope["path"], headers.get("content-type", ""))
        limit = s.max_json_bytes if is_json else s.max_body_bytes
        over = json_too_large if is_json else too_large
        length = headers.get("content-length", "")
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

        slots = self.state.body_slots
        try:
            await slots.acquire()
        except ApiError as exc:
            await error_response(exc)(scope, receive, send)
            return
        holding = True
        clock = BodyClock(s.body_timeout_s, s.body_min_rate_kib * 1024)
        seen = 0

        def done_reading() -> None:
            nonlocal holding
            if holding:
                holding = False
                slots.release()

        async def guarded() -> Message:
            nonlocal seen
            if not holding:  # the body is in (or was given up): plain receive, e.g. for disconnects
                return await receive()
            try:
                if s.body_timeout_s > 0:
                    left = clock.left()
                    if left <= 0:
                        raise clock.error()
                    try:
                        message = await asyncio.wait_for(receive(), left)
                    except TimeoutError:
                        raise clock.error() from None
                else:
                    message = await receive()
                if message["type"] == "http.request":
                    n = len(message.get("body", b""))
                    seen += n
                    clock.got(n)
                    if seen > limit:
                        raise over(limit)
                    if not message.get("more_body", False):
                        done_reading()
                else:  # http.disconnect
                    done_reading()
            except BaseException:
                done_reading()
                raise
            return message

        try:
            await self.app(scope, guarded, send)
        finally:
            done_reading()


def _authorized(header: str, key: str) -> bool:
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


class MetricsMiddleware:
    """Counts every request by route template (not the raw path: job ids would explode the series)."""

    def __init__(self, app: ASGIApp, state: ServeState, routes: Callable[[], Iterable[str]]) -> None:
        self.app = app
        self.state = state
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = self.state.metrics
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


# -- the app ---------------------------------------------------------------------------------------
def create_app(
    predictor: Predictor | Callable[[], Predictor], settings: ServeSettings | None = None
) -> FastAPI:
    """The API around ``predictor`` (or a function that loads it: the server then starts at once
    and answers 503 until the model is loaded). The app owns a predictor it loaded (closed at
    shutdown), not one it was given."""
    settings = settings or ServeSettings()
    state = ServeState(predictor, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(title="emotion-llama", lifespan=lifespan, default_response_class=SafeJSON)
    app.state.serve = state

    # -- errors
    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return error_response(ApiError(exc.status_code, message, code=code))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(ApiError(400, _validation_message(exc.errors()), code="invalid_request"))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> Response:
        rid = uuid.uuid4().hex[:12]
        log.error("request %s %s failed (id %s)", request.method, request.url.path, rid, exc_info=exc)
        return error_response(
            ApiError(500, f"internal server error (request id {rid}; the details are in the server's log)",
                     code="internal_error", type="server_error")
        )  # fmt: skip

    # -- service
    @app.get("/health")
    def health() -> Response:
        p = state.predictor
        body = {
            "status": state.status,
            "model": p.model_id if p else None,
            "kind": p.kind if p else None,
            "error": state.load_error,
            "queue_depth": state.limiter.waiting,
            "in_flight": state.limiter.running,
            "max_queue": settings.max_queue,
            "batch_jobs": state.jobs.counts(),
        }
        return SafeJSON(body, status_code=200 if state.status == "ok" else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.render(state), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    def models() -> Response:
        p = state.require_predictor()
        return SafeJSON(
            {
                "object": "list",
                "data": [
                    {
                        "id": p.model_id,
                        "object": "model",
                        "created": 0,
                        "owned_by": "emotion-llama",
                        "kind": p.kind,
                        "backend": p.backend_name,
                    }
                ],
            }
        )

    # -- uploads
    @app.post("/v1/files")
    async def upload_file(request: Request) -> Response:
        form = await state.read_form(request, dest=state.uploads.root, max_files=1)
        part = _one_file(form)
        prepared = await state.checked(part.path, part.filename, part.filename, temporary=True)
        prepared.on_release = None  # the store owns it now
        return SafeJSON(state.uploads.add(prepared.path, part.filename).info())

    @app.get("/v1/files/{file_id}")
    def file_info(file_id: str) -> Response:
        stored = state.uploads.lease(file_id)
        state.uploads.release(file_id)
        return SafeJSON(stored.info())

    @app.delete("/v1/files/{file_id}")
    def delete_file(file_id: str) -> Response:
        if not state.uploads.delete(file_id):
            raise ApiError(404, f"no uploaded file {file_id!r}", code="file_not_found")
        return SafeJSON({"id": file_id, "object": "file", "deleted": True})

    # -- chat
    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await state.read_json_body(request)
        try:
            req = ChatCompletionRequest.model_validate_json(body)
        except ValidationError as exc:
            raise ApiError(400, _validation_message(exc.errors()), code="invalid_request") from None
        del body
        ask, stream = parse_chat(req), req.stream
        del req  # the parsed messages cost many times the body: not kept while the request waits
        model = state.require_predictor().model_id
        prepared = await state.prepare(ask.video)
        if stream:
            first, rest = await state.stream(prepared, subtitle=ask.subtitle, question=ask.question)
            return StreamingResponse(
                _chat_events(first, rest, model, lambda v: state.scrub(v, prepared)),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        a = await state.analyze(prepared, subtitle=ask.subtitle, question=ask.question)
        return SafeJSON(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer_text(a)},
                        "finish_reason": "stop",
                    }
                ],
                "emotion": await emotion_field(a, lambda v: state.scrub(v, prepared)),
            }
        )

    # -- structured analysis
    @app.post("/v1/analyze")
    async def analyze(request: Request) -> Response:
        form = await state.read_form(request, dest=state.work, max_files=1)
        part = _one_file(form)
        prepared = await state.checked(
            part.path, Path(part.filename).stem or "video", part.filename, temporary=True
        )
        a = await state.analyze(
            prepared,
            subtitle=(form.first("subtitle") or "").strip() or None,
            question=question_of(form.first("question")),
        )
        out = state.scrub(a.to_dict(with_timeline=True), prepared)
        out["model"] = state.predictor.model_id if state.predictor else None
        out["peak_frame_jpeg"], out["au_timeline_png"] = await _images(a, state.work)
        return SafeJSON(out)

    @app.post("/v1/analyze/batch", status_code=202)
    async def analyze_batch(request: Request) -> Response:
        state.require_predictor()
        form = await state.read_form(request, dest=state.work, max_files=settings.max_batch_files)
        if not form.files:
            raise ApiError(400, "send one or more files in 'file' parts", code="missing_file")
        subs = form.fields.get("subtitle", [])
        if subs and len(subs) != len(form.files):
            form.discard()
            raise ApiError(400, "give one 'subtitle' per file, in order, or none", code="invalid_request")
        items: list[JobItem] = []
        for k, part in enumerate(form.files):
            name = Path(part.filename).stem or f"file{k}"
            try:
                prepared = await state.checked(part.path, name, part.filename, temporary=True)
            except ApiError as exc:
                items.append(
                    JobItem(name, None, status="error", error={"message": exc.message, "code": exc.code})
                )
                continue
            subtitle = (subs[k].strip() or None) if subs else None
            items.append(JobItem(name, prepared.path, subtitle=subtitle, filename=part.filename))
        try:
            job = state.jobs.add(items, question_of(form.first("question")))
        except ApiError:
            for i in items:
                if i.path is not None:
                    i.path.unlink(missing_ok=True)
            raise
        if all(i.status != "pending" for i in items):
            job.status, job.finished = "done", time.time()
        else:
            state.enqueue(job.id)
        body = job.to_dict()
        return SafeJSON(body, status_code=202, headers={"Location": body["status_url"]})

    @app.get("/v1/analyze/batch/{job_id}")
    def batch_status(job_id: str) -> Response:
        return SafeJSON(state.jobs.get(job_id).to_dict())

    api_paths = [getattr(r, "path", "") for r in app.routes]
    app.add_middleware(Gate, state=state)
    app.add_middleware(MetricsMiddleware, state=state, routes=lambda: api_paths)

    static = settings.static_dir
    if static is not None and static.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=static, html=True), name="static")
    return app


async def _images(a: Analysis, work: Path) -> tuple[str | None, str | None]:
    try:
        return await asyncio.to_thread(render_images, a, work)
    except Exception:  # the images are extras: the analysis stands without them
        log.exception("rendering the images of %s failed", a.name)
        return None, None


def _one_file(form: Form) -> Any:
    if len(form.files) != 1:
        form.discard()
        raise ApiError(400, "send exactly one file, in a multipart part named 'file'", code="missing_file")
    return form.files[0]


def _validation_message(errors: Iterable[Any]) -> str:
    parts = []
    for e in list(errors)[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where or 'body'}: {e.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


async def _chat_events(
    first: Any, rest: AsyncIterator[Any], model: str, scrub: Callable[[Any], Any]
) -> AsyncIterator[str]:
    """OpenAI's ``chat.completion.chunk`` events: the role, the label line, the reasoning pieces,
    a last chunk with ``finish_reason`` and our ``emotion`` field, then ``[DONE]``. An error after
    the response started comes as an ``{"error": ...}`` event (the openai package raises it)."""
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra,
        }  # fmt: skip
        return f"data: {json.dumps(_plain(body), ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    yield chunk({"content": answer_header(first.data.label)})
    wrote = False
    try:
        async for event in rest:
            if event.kind == "delta" and event.data:
                wrote = wrote or bool(str(event.data).strip())
                yield chunk({"content": str(event.data)})
            elif event.kind == "done":
                if not wrote:
                    yield chunk({"content": NO_REASONING})
                yield chunk({}, "stop", emotion=await emotion_field(event.data, scrub))
    except ApiError as exc:
        yield f"data: {json.dumps(exc.body())}\n\n"
        return
    except Exception:
        log.exception("a chat stream failed")
        err = ApiError(
            500, "internal server error while streaming", code="internal_error", type="server_error"
        )
        yield f"data: {json.dumps(err.body())}\n\n"
        return
    yield "data: [DONE]\n\n"


# -- running it ------------------------------------------------------------------------------------
def serve_forever(app: FastAPI, *, host: str, port: int, log_level: str = "info") -> None:
    """uvicorn, with Ctrl-C / SIGTERM first turning new /v1 requests into 503 while the running
    ones finish."""
    import uvicorn

    state: ServeState = app.state.serve

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

    state: ServeState | None = getattr(app.state, "serve", None)
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
