"""What a client may hold of the server (``emotion-llama serve``): the request-head deadline, the
body deadlines, the connection cap, the JSON body limit and the cap on bodies read at once.

A real uvicorn server on 127.0.0.1 (a free port, in a thread) around the real app, spoken to over
raw sockets where the timing matters. None of these requests gets as far as the model, so the
predictor is :class:`NoModel`, which loads nothing (and fails the test if it is ever called); the
server, its protocol and its gate are the real ones. Times are measured on the client; ``SLACK``
is the allowance for a busy 2-core machine.
"""

from __future__ import annotations

import contextlib
import gc
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.serve.app import ServeSettings, create_app, run_in_thread
from emotion_llama.serve.predictor import Predictor
from emotion_llama.serve.workspace import dir_size

SLACK = 1.5
PREAMBLE = b'--b\r\nContent-Disposition: form-data; name="file"; filename="clip.mp4"\r\n\r\n'
MP4_START = b"\x00\x00\x00\x18ftypmp42"  # an MP4's first bytes: the upload is accepted as a video


class NoModel(Predictor):
    """A predictor with nothing loaded (these requests are refused or fail before the model)."""

    def __init__(self) -> None:
        self.model = None
        self.llm = None
        self.model_id = "emotion-llama-clues"
        self.backend_name = "nothing loaded"

    def analyze_many(self, *args: Any, **kwargs: Any) -> Any:
        raise EmotionLlamaError("NoModel: a limits test reached the predictor")

    def close(self) -> None:
        pass


@contextlib.contextmanager
def limited(tmp_path: Path, **settings: Any) -> Iterator[tuple[str, int, Any]]:
    """The app with ``settings`` on a free loopback port; (base URL, port, app)."""
    app = create_app(NoModel(), ServeSettings(static_dir=None, tmp_dir=tmp_path, **settings))
    server, thread, port = run_in_thread(app)
    try:
        yield f"http://127.0.0.1:{port}", port, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def upload_head(length: int, path: str = "/v1/files") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def trickle(s: socket.socket, piece: bytes, every: float, *, give_up: float = 15) -> tuple[bytes, float]:
    """Send ``piece`` every ``every`` seconds (``b""``: send nothing) and read what comes back,
    until the server closes the connection; (what it sent, seconds from the call to the close).
    Fails after ``give_up`` seconds with the connection still open."""
    t0 = time.monotonic()
    answer = b""
    s.setblocking(False)
    while time.monotonic() - t0 < give_up:
        if piece:
            try:
                s.send(piece)
            except (BrokenPipeError, ConnectionResetError):
                return answer, time.monotonic() - t0
            except BlockingIOError:
                pass
        end = time.monotonic() + every
        while (left := end - time.monotonic()) > 0:
            if not select.select([s], [], [], left)[0]:
                break
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                return answer, time.monotonic() - t0
            if not got:
                return answer, time.monotonic() - t0
            answer += got
    raise AssertionError(f"the connection was still open after {give_up} s (got {answer[:80]!r})")


def read_answer(s: socket.socket, timeout: float = 10) -> bytes:
    """One whole response (its head and Content-Length bytes of body), or what came before EOF."""
    s.settimeout(timeout)
    answer = b""
    while True:
        head, sep, body = answer.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:])
                 if k.strip().lower() == b"content-length"), 0,
            )  # fmt: skip
            if len(body) >= length:
                return answer
        try:
            got = s.recv(65536)
        except ConnectionResetError:
            return answer
        if not got:
            return answer
        answer += got


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def json_of(answer: bytes) -> dict[str, Any]:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def assert_alive(base: str) -> None:
    r = httpx.get(f"{base}/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"


# -- the request head ------------------------------------------------------------------------------
def test_a_slow_or_missing_head_is_cut_at_the_head_deadline(tmp_path: Path) -> None:
    """Before: a head sent a byte at a time, or not at all, kept its connection open for good."""
    deadline = 1.0
    with limited(tmp_path, head_timeout_s=deadline) as (base, port, _):
        # a head that never ends: a byte every 0.1 s -> 408, closed
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /v1/files HTTP/1.1\r\nHost: x\r\n")
            answer, closed = trickle(s, b"X", 0.1)
        assert status_of(answer) == 408 and json_of(answer)["error"]["code"] == "request_timeout"
        assert deadline - 0.1 <= closed <= deadline + SLACK, closed

        # a connection that sends nothing: closed without a word
        with socket.create_connection(("127.0.0.1", port)) as s:
            answer, closed = trickle(s, b"", 0.1)
        assert answer == b"" and deadline - 0.1 <= closed <= deadline + SLACK, closed

        # kept alive: after a response the next head has the same time
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\n")
            answer, closed = trickle(s, b"X", 0.1)
        assert status_of(answer) == 200 and b"HTTP/1.1 408" in answer
        assert closed <= deadline + SLACK, closed

        # answered early (413 on the Content-Length): the rest of the body is not read for ever
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(upload_head(2**40) + PREAMBLE)
            answer, closed = trickle(s, b"x" * 100, 0.1)
        assert status_of(answer) == 413 and closed <= deadline + SLACK, closed
        assert_alive(base)


# -- the request body ------------------------------------------------------------------------------
def test_a_slow_upload_is_cut_at_the_body_deadline(tmp_path: Path) -> None:
    """Before: an upload at 1 byte/s was read for as long as it came (minutes)."""
    deadline = 1.0
    with limited(tmp_path, body_timeout_s=deadline, body_min_rate_kib=4.0) as (base, port, app):
        work = app.state.serve.work
        # a trickle (10 bytes/s, under the minimum rate): 408 at about the deadline, closed
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(upload_head(100_000) + PREAMBLE + MP4_START)
            answer, closed = trickle(s, b"x", 0.1)
        err = json_of(answer)["error"]
        assert status_of(answer) == 408 and err["code"] == "request_timeout", answer[:300]
        assert b"connection: close" in answer.lower()
        assert deadline - 0.1 <= closed <= deadline + SLACK, closed

        # a fast start, then a stall: the pause may not pass the deadline either
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(upload_head(1_000_000) + PREAMBLE + MP4_START + b"\x00" * 200_000)
            answer, closed = trickle(s, b"", 0.1)
        assert status_of(answer) == 408 and deadline - 0.1 <= closed <= deadline + SLACK, closed
        time.sleep(0.2)
        assert dir_size(work) == 0  # the partial uploads were removed

        # longer than the deadline but at a fair pace (~200 KiB/s for 1.5 s): read to the end
        size = 300 * 1024
        body = PREAMBLE + MP4_START + b"\x00" * size + b"\r\n--b--\r\n"
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(upload_head(len(body)))
            for k in range(0, len(body), 20 * 1024):
                s.sendall(body[k : k + 20 * 1024])
                time.sleep(0.1)
            answer = read_answer(s)
        assert time.monotonic() - t0 > deadline * 1.3
        assert status_of(answer) == 200, answer[:300]
        assert json_of(answer)["bytes"] == len(MP4_START) + size
        assert_alive(base)


def test_json_body_over_its_limit_is_413_before_it_is_parsed(tmp_path: Path) -> None:
    """The JSON limit is its own, far below the upload limit: refused on the Content-Length, and
    a chunked body (no length) is cut as it passes the limit. Either way never parsed: the bodies
    here are not even JSON, which parsed would be a 400."""
    json_mb, upload_mb = 0.25, 8
    limit = int(json_mb * 2**20)
    with limited(tmp_path, max_json_mb=json_mb, max_upload_mb=upload_mb) as (base, port, _):
        # the Content-Length says too much: 413 on the head, before a byte of the body is sent
        for path, ctype in [("/v1/chat/completions", "application/json"), ("/v1/files", "application/json")]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {limit + 1}\r\n\r\n".encode()
                )
                answer = read_answer(s)
            err = json_of(answer)["error"]
            assert status_of(answer) == 413 and err["code"] == "payload_too_large", (path, answer[:300])
            assert "JSON" in err["message"] and "0.25 MiB" in err["message"]

        # chunked, no length: 64 MiB of not-JSON offered; 413 once the limit has gone by
        piece = b"%x\r\n" % 2**16 + b"{" * 2**16 + b"\r\n"
        sent = 0
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            s.setblocking(False)
            while sent < 64 * 2**20 and not select.select([s], [], [], 0)[0]:
                with contextlib.suppress(BlockingIOError):
                    sent += s.send(piece)
                    continue
                select.select([s], [s], [], 1.0)
            answer = read_answer(s)
        assert status_of(answer) == 413 and b"payload_too_large" in answer, answer[:300]
        assert sent < 16 * 2**20, sent  # the server stopped reading at the limit (+ socket buffers)

        with httpx.Client(base_url=base, timeout=10) as c:
            # under the limit the same body is parsed (and refused as what it is)
            r = c.post(
                "/v1/chat/completions", content=b"{" * 1000, headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
            # uploads keep the upload limit: 1 MiB (4x the JSON limit) is fine
            video = MP4_START + b"\x00" * 2**20
            r = c.post("/v1/files", files={"file": ("clip.mp4", video, "video/mp4")})
            assert r.status_code == 200 and r.json()["bytes"] == len(video)
        assert_alive(base)


def _rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[list[float]]:
    """The growth of this process's peak RSS in the block, in MiB (in the list, after it): the
    kernel's high-water mark VmHWM, reset first through /proc/self/clear_refs; where that may not
    be written, VmRSS sampled every 2 ms."""
    out: list[float] = []
    gc.collect()
    baseline = _rss_kib()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    except OSError:
        peak, stop = [baseline], threading.Event()

        def sample() -> None:
            while not stop.wait(0.002):
                peak[0] = max(peak[0], _rss_kib())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield out
        finally:
            stop.set()
            sampler.join()
        out.append((max(peak[0], _rss_kib()) - baseline) / 1024)
        return
    yield out
    out.append((_rss_kib("VmHWM") - baseline) / 1024)


def test_concurrent_large_json_bodies_keep_memory_bounded(tmp_path: Path) -> None:
    """16 clients at once, with the default limits: 8 send chat bodies just under the JSON limit
    (4 MiB, in the costliest shape: many tiny messages), 8 send 12 MiB ones (over it, under the
    upload limit). The server's peak RSS (the server runs in this process; /proc/self's VmHWM,
    reset before) grows by less than 300 MiB.

    Before (one limit for everything, the upload limit + 1 MiB, and every body read at once) all
    16 were read and parsed, and the peak grew by about 420 MiB."""
    settings = ServeSettings()
    under = settings.max_json_bytes - 4096
    message = b'{"role":"user","content":"x"},'
    video = b'{"role":"user","content":[{"type":"video_url","video_url":{"url":"upload://file-missing"}}]}'
    small = b'{"messages":[' + message * ((under - 200) // len(message)) + video + b"]}"
    big = b'{"messages":[' + message * (12 * 2**20 // len(message)) + video + b"]}"
    assert len(small) <= under and settings.max_json_bytes < len(big) < settings.max_body_bytes

    with limited(tmp_path) as (base, port, _):
        assert_alive(base)

        def post(body: bytes) -> int:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                start.wait(30)
                s.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body)
                )
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    s.sendall(body)
                return status_of(read_answer(s, 120))

        start = threading.Barrier(16)
        with peak_rss_growth() as grown, ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(post, [small] * 8 + [big] * 8))
        grown_mib = grown[0]
        print(f"16 JSON bodies (8 x {len(small) >> 10} KiB, 8 x {len(big) >> 20} MiB): {statuses}, "
              f"peak RSS +{grown_mib:.0f} MiB")  # fmt: skip
        assert grown_mib < 300, grown_mib
        assert statuses == [404] * 8 + [413] * 8, statuses  # parsed (no such upload) / refused
        assert_alive(base)


# -- connections and turns -------------------------------------------------------------------------
def test_connections_over_the_cap_get_503(tmp_path: Path) -> None:
    with limited(tmp_path, max_connections=4, head_timeout_s=10) as (base, port, _):
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        try:
            time.sleep(0.2)
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", port)) as s:
                answer, closed = trickle(s, b"", 0.1)
            assert status_of(answer) == 503 and closed < SLACK, (answer[:200], closed)
            err = json_of(answer)["error"]
            assert err["code"] == "too_many_connections" and b"retry-after: 1" in answer.lower()
            assert time.monotonic() - t0 < SLACK
            held.pop().close()
            time.sleep(0.2)
            assert_alive(base)  # a place came free
        finally:
            for s in held:
                s.close()


def test_bodies_read_at_once_are_capped(tmp_path: Path) -> None:
    """2 uploads being read hold both turns: a third waits ``body_wait_s`` for one, then 429;
    requests without a body are not held up; a turn that comes free in time is taken."""
    settings = dict(max_body_reads=2, body_wait_s=0.5, body_timeout_s=5, body_min_rate_kib=0)
    video = MP4_START + b"\x00" * 1000
    with limited(tmp_path, **settings) as (base, port, app):
        slots = app.state.serve.body_slots
        holders = []
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(upload_head(100_000) + PREAMBLE + MP4_START)
            holders.append(s)
        deadline = time.monotonic() + 5
        while slots.reading < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert slots.reading == 2
        with httpx.Client(base_url=base, timeout=10) as c:
            t0 = time.monotonic()
            r = c.post("/v1/files", files={"file": ("c.mp4", video, "video/mp4")})
            waited = time.monotonic() - t0
            assert r.status_code == 429 and r.json()["error"]["code"] == "busy", r.text
            assert r.headers["Retry-After"] == "1" and 0.45 <= waited <= 0.5 + SLACK, waited
            assert c.get("/health").status_code == 200  # no body, no turn needed

            threading.Timer(0.2, holders[0].close).start()  # a turn comes free while the next waits
            r = c.post("/v1/files", files={"file": ("c.mp4", video, "video/mp4")})
            assert r.status_code == 200, r.text
            holders[1].close()
            deadline = time.monotonic() + 5
            while slots.reading and time.monotonic() < deadline:
                time.sleep(0.02)
            assert slots.reading == 0  # the turns of the clients that left came back
