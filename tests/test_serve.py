"""The API server (``emotion-llama serve``).

Fast tests: the pure parts (chat parsing, the allow-lists, path resolution, sniffing, the streamed
multipart reader, the limiter, the job store) and an app whose model fails to load.

Slow tests: a real uvicorn server on 127.0.0.1 (a free port, in a thread, stopped at the end)
around one real :class:`Predictor` (tiny preset, the offline SmolLM2 LLM, real perception) on real
sample clips; the official ``openai`` package and httpx talk to it. The predictor is the real one:
``CountingPredictor`` only counts calls (and can be told to crash, for the 500 test). Its LLM answers
are cached in SQLite (a feature of the predictor): the first analysis of a clip runs the LLM, later
ones of the same clip reuse the answer, which keeps the load test short.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import http.server
import io
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
import pytest

import emotion_llama
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.serve.app import (
    ChatCompletionRequest,
    Limiter,
    ServeSettings,
    create_app,
    parse_chat,
    question_of,
    run_in_thread,
)
from emotion_llama.serve.errors import ApiError
from emotion_llama.serve.inputs import check_video_file, host_allowed, resolve_local, sniff_container
from emotion_llama.serve.jobs import JobItem, JobStore
from emotion_llama.serve.multipart import read_multipart
from emotion_llama.serve.workspace import dir_size

SOURCE_DIR = str(Path(emotion_llama.__file__).resolve().parent)


def assert_clean_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """An OpenAI-style JSON error, without a traceback or a path of the server's source."""
    assert resp.status_code == status, resp.text
    assert "Traceback" not in resp.text and SOURCE_DIR not in resp.text
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "code"}
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


# -- fast: pure parts ------------------------------------------------------------------------------
def chat_req(*parts: dict[str, Any], **extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": list(parts)}], **extra}
    )


def test_parse_chat_finds_video_question_and_subtitle() -> None:
    video = {"type": "video_url", "video_url": {"url": "upload://file-" + "a" * 32}}
    ask = parse_chat(chat_req(video, {"type": "text", "text": "Why is she laughing?"}))
    assert (ask.video, ask.question, ask.subtitle) == (
        "upload://file-" + "a" * 32,
        "Why is she laughing?",
        None,
    )
    # the standard emotion prompt and an empty text both mean "label + reasoning"
    from emotion_llama.prompts import EMOTION_INSTRUCTION, REASON_INSTRUCTIONS

    for text in (EMOTION_INSTRUCTION, REASON_INSTRUCTIONS[1].upper(), "", "  "):
        assert parse_chat(chat_req(video, {"type": "text", "text": text})).question is None
    # a "Subtitle:" text part is the subtitle, not the question; the field wins over it
    ask = parse_chat(chat_req(video, {"type": "text", "text": "Subtitle: I did it!"}))
    assert (ask.subtitle, ask.question) == ("I did it!", None)
    ask = parse_chat(chat_req(video, {"type": "text", "text": "Subtitle: no"}, subtitle="yes"))
    assert ask.subtitle == "yes"
    # the video may sit in an earlier turn; the question is the last user turn's text
    req = ChatCompletionRequest.model_validate(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [video]},
                {"role": "assistant", "content": "Emotion: happy"},
                {"role": "user", "content": "And what did the person say?"},
            ]
        }
    )
    assert parse_chat(req).question == "And what did the person say?"
    with pytest.raises(ApiError) as e:
        parse_chat(chat_req({"type": "text", "text": "hi"}))
    assert e.value.status == 400 and e.value.code == "missing_video"
    with pytest.raises(ApiError):
        parse_chat(chat_req({"type": "image_url", "image_url": {"url": "x"}}))
    assert question_of(None) is None and question_of(" What emotion is this? ") is None


def test_url_allow_list() -> None:
    allowed = ["127.0.0.1:8123", "media.example.org", "*.cdn.example.net"]
    assert host_allowed("http://127.0.0.1:8123/a.mp4", allowed)
    assert not host_allowed("http://127.0.0.1:9999/a.mp4", allowed)  # another port
    assert not host_allowed("http://localhost:8123/a.mp4", allowed)  # names are not resolved
    assert host_allowed("https://MEDIA.example.org./v.mp4", allowed)
    assert host_allowed("https://eu.cdn.example.net/v.mp4", allowed)
    assert not host_allowed("https://cdn.example.net.evil.com/v.mp4", allowed)
    assert not host_allowed("https://media.example.org@evil.com/v.mp4", allowed)  # credentials trick
    assert not host_allowed("https://evil.com\\@media.example.org/v.mp4", allowed)
    assert not host_allowed("ftp://media.example.org/v.mp4", allowed)
    assert not host_allowed("http://media.example.org/v.mp4", [])


def test_local_paths_only_under_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    inside = root / "sub" / "clip.mp4"
    inside.write_bytes(b"x")
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"x")
    (root / "link.mp4").symlink_to(secret)  # a symlink pointing out
    (root / "dirlink").symlink_to(tmp_path)  # a folder symlink pointing out
    (root / "inner.mp4").symlink_to(inside)  # a symlink inside: fine
    roots = (root.resolve(),)
    assert resolve_local(str(inside), roots) == inside.resolve()
    assert resolve_local(f"file://{inside}", roots) == inside.resolve()
    assert resolve_local(str(root / "inner.mp4"), roots) == inside.resolve()
    for bad, code in [
        (str(secret), "path_not_allowed"),
        (f"{root}/sub/../../secret.mp4", "path_traversal"),
        (f"file://{root}/sub/%2e%2e/%2e%2e/secret.mp4", "path_traversal"),
        (str(root / "link.mp4"), "path_not_allowed"),
        (str(root / "dirlink" / "secret.mp4"), "path_not_allowed"),
        (f"file://evil.host{inside}", "path_not_allowed"),
    ]:
        with pytest.raises(ApiError) as e:
            resolve_local(bad, roots)
        assert (e.value.status, e.value.code) == (403, code), bad
    with pytest.raises(ApiError) as e:
        resolve_local(str(inside), ())
    assert e.value.status == 403
    with pytest.raises(ApiError) as e:
        resolve_local(str(root / "sub" / "missing.mp4"), roots)
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        resolve_local("relative/clip.mp4", roots)
    assert e.value.status == 400


def test_file_type_sniffing(tmp_path: Path) -> None:
    assert sniff_container(b"\x00\x00\x00\x20ftypisom") == ".mp4"
    assert sniff_container(b"\x1a\x45\xdf\xa3rest") == ".mkv"
    assert sniff_container(b"RIFF\x00\x00\x00\x00AVI LIST") == ".avi"
    assert sniff_container(b"hello world") is None
    text = tmp_path / "notes.mp4"  # the name lies; the content decides
    text.write_text("just some text\n" * 50)
    with pytest.raises(ApiError) as e:
        check_video_file(text)
    assert e.value.status == 415


async def _chunks(total: int, size: int, pulled: list[int]) -> Any:
    boundary = b"--b0undary"
    yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
    sent = 0
    while sent < total:
        pulled[0] += size
        sent += size
        yield b"\x00" * size


def test_multipart_reader_stops_at_the_limit(tmp_path: Path) -> None:
    """A "2 GB" upload is cut at the limit: the reader stops pulling, removes what it wrote and
    never has more than the limit on disk."""
    limit = 3 * 2**20
    pulled = [0]
    with pytest.raises(ApiError) as e:
        asyncio.run(
            read_multipart(
                _chunks(2 * 2**30, 2**16, pulled),
                "multipart/form-data; boundary=b0undary",
                tmp_path,
                max_file_bytes=limit,
            )
        )
    assert e.value.status == 413
    assert pulled[0] <= limit + 2**16  # it stopped reading right after the limit
    assert dir_size(tmp_path) == 0  # and cleaned up


def test_multipart_reader_fields_and_files(tmp_path: Path) -> None:
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="subtitle"\r\n\r\nhello there\r\n'
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="file"; filename="../../etc/clip.mp4"\r\n'
        b"Content-Type: video/mp4\r\n\r\n" + b"\x00\x00\x00\x18ftypmp42" + b"data" * 10 + b"\r\n"
        b"--XyZ--\r\n"
    )

    async def one() -> Any:
        yield body

    form = asyncio.run(
        read_multipart(one(), "multipart/form-data; boundary=XyZ", tmp_path, max_file_bytes=1000)
    )
    assert form.first("subtitle") == "hello there"
    (f,) = form.files
    assert (
        f.filename == "clip.mp4" and f.path.parent == tmp_path and f.size == 52
    )  # the name lost its folders
    with pytest.raises(ApiError) as e:
        asyncio.run(read_multipart(one(), "application/json", tmp_path, max_file_bytes=1000))
    assert e.value.status == 400


def test_limiter_queue_full_timeout_and_order() -> None:
    async def scenario() -> None:
        lim = Limiter(max_concurrency=1, max_queue=2)
        gate = threading.Event()
        order: list[int] = []

        def job(i: int) -> int:
            gate.wait(5)
            order.append(i)
            return i

        now = time.monotonic()
        tasks = [asyncio.create_task(lim.run(lambda i=i: job(i), deadline=now + 5)) for i in range(3)]
        await asyncio.sleep(0.05)
        assert (lim.running, lim.waiting) == (1, 2)
        with pytest.raises(ApiError) as e:  # 1 running + 2 waiting: the 4th is refused
            await lim.run(lambda: job(9), deadline=now + 5)
        assert e.value.status == 429 and int(e.value.headers["Retry-After"]) >= 1
        exempt = asyncio.create_task(lim.run(lambda: job(3), deadline=None, exempt=True))  # batch: waits
        gate.set()
        assert await asyncio.gather(*tasks, exempt) == [0, 1, 2, 3]
        assert order == [0, 1, 2, 3] and (lim.running, lim.waiting) == (0, 0)
        # a call past its deadline: 504, and its slot comes back when its thread ends
        with pytest.raises(ApiError) as e:
            await lim.run(lambda: time.sleep(0.3), deadline=time.monotonic() + 0.05)
        assert e.value.status == 504
        assert await lim.run(lambda: 7, deadline=time.monotonic() + 5) == 7
        # shutting down: waiting calls get 503
        hold = threading.Event()
        running = asyncio.create_task(lim.run(lambda: hold.wait(5), deadline=None))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(lim.run(lambda: 1, deadline=None))
        await asyncio.sleep(0.05)
        lim.close(ApiError(503, "bye", code="unavailable"))
        hold.set()
        with pytest.raises(ApiError) as e:
            await waiting
        assert e.value.status == 503
        await running
        lim.shutdown()

    asyncio.run(scenario())


def test_job_store_cap() -> None:
    store = JobStore(max_jobs=2)
    a = store.add([JobItem("a", None)], None)
    b = store.add([JobItem("b", None)], None)
    with pytest.raises(ApiError) as e:  # both still queued
        store.add([JobItem("c", None)], None)
    assert e.value.status == 429
    a.status, a.finished = "done", time.time()
    c = store.add([JobItem("c", None)], None)  # evicts the finished one
    assert store.get(c.id) is c and store.get(b.id) is b
    with pytest.raises(ApiError) as e:
        store.get(a.id)
    assert e.value.status == 404


@contextlib.contextmanager
def serving(predictor: Any, **settings: Any) -> Iterator[tuple[str, Any]]:
    """The app on a free 127.0.0.1 port in a thread; stopped (and its temp folder removed) after."""
    app = create_app(predictor, ServeSettings(static_dir=None, **settings))
    server, thread, port = run_in_thread(app)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def test_failed_model_load_is_503_and_errors_are_json(tmp_path: Path) -> None:
    def broken_loader() -> Any:
        raise EmotionLlamaError("no such checkpoint: /models/missing")

    with serving(broken_loader, tmp_dir=tmp_path) as (base, app):
        deadline = time.monotonic() + 10
        while app.state.serve.status == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        with httpx.Client(base_url=base, timeout=10) as c:
            health = c.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "error"
            err = assert_clean_error(c.get("/v1/models"), 503, "unavailable")
            assert "failed to load" in err["message"]
            assert_clean_error(c.post("/v1/chat/completions", json={}), 503)
            assert_clean_error(c.get("/nowhere"), 404, "not_found")
            assert_clean_error(c.delete("/health"), 405, "method_not_allowed")
    assert not any(tmp_path.iterdir())  # the temp folder went with the server


# -- slow: the real predictor behind a real server -------------------------------------------------
def _counting_predictor_class() -> type:
    from emotion_llama.serve.predictor import Predictor

    class Counting(Predictor):
        """The real predictor, counting its calls; ``fail`` makes the next calls crash (500 test)."""

        calls = 0
        fail: BaseException | None = None

        def analyze_many(self, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.fail is not None:
                raise self.fail
            return super().analyze_many(*args, **kwargs)

        def stream(self, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.fail is not None:
                raise self.fail
            yield from super().stream(*args, **kwargs)

    return Counting  # defined here: importing the predictor pulls torch, kept out of the fast tests


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from emotion_llama.media.samples import make_speaking_clip, real_media_dir

    root = tmp_path_factory.mktemp("serve_root")
    try:
        face = real_media_dir() / "WolfgangLanger_Pexels.mp4"
        clip = make_speaking_clip(
            face, "What a wonderful surprise this is.", root / "clip.mp4", start=8.0, seconds=3.0
        )
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))
    data = clip.read_bytes()
    (root / "broken.mp4").write_bytes(data[: len(data) // 2])  # truncated: its index points past the end
    (root / "notes.txt").write_text("not a video\n" * 100)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.mp4").write_bytes(data)
    (root / "escape.mp4").symlink_to(outside / "secret.mp4")
    return {"root": root, "clip": clip, "broken": root / "broken.mp4", "text": root / "notes.txt",
            "outside": outside / "secret.mp4", "escape": root / "escape.mp4"}  # fmt: skip


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cls = _counting_predictor_class()
    p = cls(preset="tiny", llm="offline", cache=tmp_path_factory.mktemp("llm") / "answers.sqlite")
    yield p
    p.close()


@pytest.fixture(scope="module")
def file_server(clips: dict[str, Path]) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server with the clips (what a media host would be); it logs the paths asked."""
    asked: list[str] = []
    root = clips["root"]

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, directory=str(root), **k)

        def do_GET(self) -> None:
            asked.append(self.path)
            if self.path == "/redirect-out":
                self.send_response(302)
                self.send_header("Location", "http://localhost:1/clip.mp4")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *a: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}", asked
    httpd.shutdown()
    httpd.server_close()


LIMIT_MB = 8


@pytest.fixture(scope="module")
def api(
    predictor: Any, clips: dict[str, Path], file_server: tuple[str, list[str]]
) -> Iterator[tuple[str, Any]]:
    settings = dict(
        allow_roots=(clips["root"].resolve(),), allow_url_hosts=(file_server[0],), max_upload_mb=LIMIT_MB,
        max_queue=4, timeout_s=300,
    )  # fmt: skip
    with serving(predictor, **settings) as served:
        yield served


def video_part(url: str, text: str | None = None) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "video_url", "video_url": {"url": url}}]
    if text is not None:
        parts.append({"type": "text", "text": text})
    return parts


@pytest.mark.slow
def test_openai_client_gets_an_answer_and_a_stream(api: tuple[str, Any], clips: dict[str, Path]) -> None:
    openai = pytest.importorskip("openai")
    base, _ = api
    with httpx.Client(base_url=base, timeout=60) as c:
        up = c.post("/v1/files", files={"file": ("clip.mp4", clips["clip"].read_bytes(), "video/mp4")})
    assert up.status_code == 200, up.text
    url = up.json()["url"]
    assert url.startswith("upload://file-")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=300)
    model = client.models.list().data[0].id
    assert model == "emotion-llama-clues"

    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": video_part(url, "What emotion is this?")}]
    )
    text = reply.choices[0].message.content
    emotion = reply.model_extra["emotion"]
    assert emotion["label"] and text.startswith(f"Emotion: {emotion['label']}\n\n")
    assert emotion["reasoning"] and emotion["reasoning"] in text and emotion["question"] is None
    assert emotion["clues"]["subtitle"]  # speech was recognised
    assert (
        emotion["peak_frame_jpeg"].startswith("data:image/jpeg;base64,") and emotion["au_timeline"]["names"]
    )
    assert reply.choices[0].finish_reason == "stop"

    stream = client.chat.completions.create(
        model=model,
        stream=True,
        messages=[
            {"role": "user", "content": video_part(url, "Does the person sound sincere? Answer briefly.")}
        ],
    )
    pieces, roles, final = [], [], None
    for chunk in stream:
        delta = chunk.choices[0].delta
        roles += [delta.role] if delta.role else []
        pieces += [delta.content] if delta.content else []
        if chunk.choices[0].finish_reason == "stop":
            final = chunk.model_extra["emotion"]
    assert roles == ["assistant"] and final is not None
    joined = "".join(pieces)
    # the label line, then the answer: one piece, sent once it passed the faithfulness check
    assert len(pieces) >= 2 and pieces[0].startswith("Emotion: ") and joined.strip()
    assert final["question"].startswith("Does the person") and final["au_timeline"]["times"]
    assert joined.strip() == f"Emotion: {final['label']}\n\n{final['reasoning']}".strip()


@pytest.mark.slow
def test_every_kind_of_video_reference(
    api: tuple[str, Any], predictor: Any, clips: dict[str, Path], file_server: tuple[str, list[str]]
) -> None:
    base, _ = api
    host, asked = file_server
    b64 = base64.b64encode(clips["clip"].read_bytes()).decode()
    refs = [
        f"data:video/mp4;base64,{b64}",
        f"file://{clips['clip']}",
        str(clips["clip"]),
        f"http://{host}/clip.mp4",
    ]
    with httpx.Client(base_url=base, timeout=300) as c:
        for ref in refs:
            r = c.post(
                "/v1/chat/completions",
                json={
                    "model": "m",
                    "messages": [{"role": "user", "content": video_part(ref)}],
                    "subtitle": "Wow.",
                },
            )
            assert r.status_code == 200, (ref[:40], r.text)
            assert r.json()["emotion"]["clues"]["subtitle"] == "Wow."  # the subtitle replaced ASR
    assert "/clip.mp4" in asked


@pytest.mark.slow
def test_security_refusals_never_reach_the_predictor(
    api: tuple[str, Any], predictor: Any, clips: dict[str, Path], file_server: tuple[str, list[str]]
) -> None:
    base, app = api
    host, asked = file_server
    port = host.split(":")[1]
    tmp = app.state.serve.tmp
    before = predictor.calls
    n_asked = len(asked)
    cases = [
        (str(clips["outside"]), 403, "path_not_allowed"),
        (f"{clips['root']}/../{clips['outside'].parent.name}/secret.mp4", 403, "path_traversal"),
        (str(clips["escape"]), 403, "path_not_allowed"),
        (f"http://localhost:{port}/clip.mp4", 403, "url_not_allowed"),  # same server, name not listed
        (f"http://{host}/redirect-out", 403, "url_not_allowed"),  # a redirect off the list
        (str(clips["text"]), 415, "unsupported_media_type"),
        (
            "data:video/mp4;base64," + base64.b64encode(b"plain text " * 50).decode(),
            415,
            "unsupported_media_type",
        ),
        ("gopher://x/y", 400, "invalid_video_url"),
    ]
    with httpx.Client(base_url=base, timeout=60) as c:
        for ref, status, code in cases:
            r = c.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": video_part(ref)}]}
            )
            err = assert_clean_error(r, status, code)
            assert str(clips["outside"].parent) not in err["message"]  # a symlink's target is not told
        r = c.post("/v1/analyze", files={"file": ("notes.mp4", clips["text"].read_bytes(), "video/mp4")})
        assert_clean_error(r, 415, "unsupported_media_type")
        r = c.post("/v1/files", files={"file": ("notes.txt", clips["text"].read_bytes(), "text/plain")})
        assert_clean_error(r, 415, "unsupported_media_type")
    assert asked[n_asked:] == ["/redirect-out"]  # the unlisted host was never contacted

    # a "2 GB" upload announced in Content-Length: refused on the header, nothing read
    head = (
        f"POST /v1/analyze HTTP/1.1\r\nHost: {base[7:]}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 2147483648\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=30) as s:
        s.sendall(head + b"--b\r\n")
        answer = _read_response(s)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"payload_too_large" in answer and b"Traceback" not in answer

    # a "2 GB" chunked upload without a length: cut at the limit while streaming; the server's temp
    # folder never holds more than the limit
    sent, largest, answer = _chunked_upload(base, tmp, total=2 * 2**30)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert largest <= LIMIT_MB * 2**20, largest
    assert sent < 2 * 2**30 // 16  # it stopped long before 2 GB went over the wire
    assert predictor.calls == before
    time.sleep(0.2)
    assert not any((tmp / "work").iterdir())  # the partial upload was removed


def _read_response(s: socket.socket) -> bytes:
    data = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            got = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not got:
            break
        data += got
        if b"\r\n\r\n" in data and data.split(b"\r\n\r\n", 1)[1].rstrip().endswith(b"}"):
            break
    return data


def _chunked_upload(base: str, tmp: Path, *, total: int) -> tuple[int, int, bytes]:
    """Stream up to ``total`` bytes of a multipart upload in 1 MiB HTTP chunks over a raw socket
    (non-blocking, at most 60 s), stopping when the server answers; (bytes sent, the largest size
    of the server's temp folder seen meanwhile, the answer)."""
    port = int(base.rsplit(":", 1)[1])
    chunk = 2**20
    piece = b"%x\r\n" % chunk + b"\x00" * chunk + b"\r\n"
    sent = largest = 0
    before = dir_size(tmp)  # the uploads kept from earlier tests
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        preamble = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
        s.sendall(
            b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(preamble) + preamble + b"\r\n"
        )
        s.setblocking(False)
        pending = b""
        deadline = time.monotonic() + 60
        while sent < total and time.monotonic() < deadline:
            readable, writable, _ = select.select([s], [s], [], 1.0)
            if readable:
                break  # the server has answered
            if writable:
                pending = pending or piece
                try:
                    n = s.send(pending)
                except (BlockingIOError, InterruptedError):
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
                pending = pending[n:]
                sent += n
            largest = max(largest, dir_size(tmp) - before)
        s.settimeout(30)
        answer = _read_response(s)
    return sent, largest, answer


@pytest.mark.slow
def test_analyze_endpoint_returns_the_structured_result(api: tuple[str, Any], clips: dict[str, Path]) -> None:
    from PIL import Image

    base, app = api
    with httpx.Client(base_url=base, timeout=300) as c:
        r = c.post("/v1/analyze", files={"file": ("my clip.mp4", clips["clip"].read_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["label"] and d["reasoning"] and d["name"] == "my clip" and d["model"] == "emotion-llama-clues"
    assert set(d["au_timeline"]) >= {"names", "times", "intensity"} and len(d["au_timeline"]["times"]) > 3
    assert d["clues"]["candidate_labels"] and d["clues"]["subtitle"]
    assert str(app.state.serve.tmp) not in r.text  # the server's temp paths are not shown
    jpeg = d["peak_frame_jpeg"]
    assert jpeg.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(jpeg.split(",", 1)[1]))) as im:
        assert im.format == "JPEG" and min(im.size) > 32
    png = base64.b64decode(d["au_timeline_png"].split(",", 1)[1])
    assert d["au_timeline_png"].startswith("data:image/png;base64,") and png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_broken_video_is_422_and_a_crash_is_a_clean_500(
    api: tuple[str, Any], predictor: Any, clips: dict[str, Path]
) -> None:
    base, app = api
    with httpx.Client(base_url=base, timeout=300) as c:
        r = c.post("/v1/analyze", files={"file": ("broken.mp4", clips["broken"].read_bytes(), "video/mp4")})
        err = assert_clean_error(r, 422, "invalid_video")
        assert err["message"].startswith("broken.mp4: ") and str(app.state.serve.tmp) not in err["message"]
        predictor.fail = RuntimeError(f"secret detail in {SOURCE_DIR}/serve/app.py")
        try:
            messages = [{"role": "user", "content": video_part(str(clips["clip"]))}]
            r = c.post("/v1/chat/completions", json={"messages": messages})
            err = assert_clean_error(r, 500, "internal_error")
            assert "secret" not in r.text and "request id" in err["message"]
        finally:
            predictor.fail = None


@pytest.mark.slow
def test_batch_job_with_a_good_and_a_broken_file(api: tuple[str, Any], clips: dict[str, Path]) -> None:
    base, _ = api
    files = [
        ("file", ("good.mp4", clips["clip"].read_bytes(), "video/mp4")),
        ("file", ("broken.mp4", clips["broken"].read_bytes(), "video/mp4")),
        ("file", ("notes.txt", clips["text"].read_bytes(), "text/plain")),
    ]
    with httpx.Client(base_url=base, timeout=60) as c:
        r = c.post("/v1/analyze/batch", files=files)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] in ("queued", "running") and job["total"] == 3
        seen = {job["status"]}
        deadline = time.monotonic() + 240
        while job["status"] != "done" and time.monotonic() < deadline:
            time.sleep(0.25)
            job = c.get(job["status_url"]).json()
            seen.add(job["status"])
        assert_clean_error(c.get("/v1/analyze/batch/batch-nope"), 404, "job_not_found")
    assert job["status"] == "done" and seen & {"queued", "running"}
    good, broken, text = job["results"]
    assert good["status"] == "done" and good["result"]["label"] and good["error"] is None
    assert broken["status"] == "error" and broken["error"]["code"] == "invalid_video"
    assert broken["error"]["message"].startswith("broken.mp4")
    assert text["status"] == "error" and text["error"]["code"] == "unsupported_media_type"
    assert (job["completed"], job["failed"]) == (3, 2)


@pytest.mark.slow
def test_load_32_concurrent_requests(api: tuple[str, Any], clips: dict[str, Path]) -> None:
    """32 requests at once against 1 worker + a queue of 4: each gets a 200 or a clean 429 (or
    503), none is lost, the server still answers, and its memory returns near its baseline
    (tolerance: +400 MiB over the RSS measured after a warm-up request; the predictor alone is
    about 1.4 GiB)."""
    base, _ = api
    data = clips["clip"].read_bytes()
    with httpx.Client(base_url=base, timeout=300) as c:
        assert c.post("/v1/analyze", files={"file": ("warm.mp4", data, "video/mp4")}).status_code == 200
    gc.collect()
    baseline = _rss()
    start = threading.Barrier(32)

    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=300) as c:
            start.wait(30)
            return c.post("/v1/analyze", files={"file": (f"c{i}.mp4", data, "video/mp4")})

    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(one, range(32)))
    statuses = [r.status_code for r in responses]
    assert len(responses) == 32 and set(statuses) <= {200, 429, 503}, statuses
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
    for r in responses:
        if r.status_code == 200:
            assert r.json()["label"]
        else:
            assert_clean_error(r, r.status_code)
            assert int(r.headers["Retry-After"]) >= 1
    with httpx.Client(base_url=base, timeout=30) as c:
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["queue_depth"] == 0
    gc.collect()
    time.sleep(0.5)
    grown = _rss() - baseline
    ok, busy = statuses.count(200), statuses.count(429)
    print(f"load: {ok} x 200, {busy} x 429; RSS {baseline >> 20} MiB, +{grown >> 20} MiB")
    assert grown < 400 * 2**20


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.slow
def test_metrics_count_requests(api: tuple[str, Any], clips: dict[str, Path]) -> None:
    base, _ = api

    def counter(text: str, labels: str) -> float:
        for line in text.splitlines():
            if line.startswith(f"emotion_llama_http_requests_total{{{labels}}} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    health = 'method="GET",route="/health",status="200"'
    bad_type = 'method="POST",route="/v1/analyze",status="415"'
    with httpx.Client(base_url=base, timeout=30) as c:
        before = c.get("/metrics").text
        c.get("/health")
        c.post("/v1/analyze", files={"file": ("a.txt", clips["text"].read_bytes(), "text/plain")})
        text = c.get("/metrics").text
    assert counter(text, health) == counter(before, health) + 1
    assert counter(text, bad_type) == counter(before, bad_type) + 1
    assert 'emotion_llama_http_request_duration_seconds_bucket{le="0.5",route="/v1/analyze"}' in text
    assert "emotion_llama_queue_depth 0.0" in text and "emotion_llama_predictor_busy 0.0" in text
    assert "emotion_llama_http_requests_in_flight 1.0" in text  # this very request
    assert "emotion_llama_predictions_total" in text and "emotion_llama_batch_jobs{" in text


@pytest.mark.slow
def test_api_key_timeout_and_shutdown(predictor: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    openai = pytest.importorskip("openai")
    root = (clips["root"].resolve(),)
    with (
        serving(predictor, api_key="s3cret", allow_roots=root, timeout_s=0.3, tmp_dir=tmp_path) as (
            base,
            app,
        ),
        httpx.Client(base_url=base, timeout=60) as c,
    ):
        assert_clean_error(c.get("/v1/models"), 401, "invalid_api_key")
        assert_clean_error(c.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        assert c.get("/health").status_code == 200  # open
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong").models.list()
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="s3cret")
        assert client.models.list().data[0].id == "emotion-llama-clues"
        # the analysis takes seconds; the timeout is 0.3 s
        r = c.post(
            "/v1/chat/completions",
            headers={"Authorization": "Bearer s3cret"},
            json={"messages": [{"role": "user", "content": video_part(str(clips["clip"]))}]},
        )
        assert_clean_error(r, 504, "timeout")
        deadline = time.monotonic() + 120  # let the abandoned call finish before the next test
        while app.state.serve.limiter.running and time.monotonic() < deadline:
            time.sleep(0.1)
        app.state.serve.request_shutdown()
        time.sleep(0.1)
        r = c.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert_clean_error(r, 503, "unavailable")
        assert c.get("/health").json()["status"] == "shutting_down"


@pytest.mark.slow
def test_serve_llm_streams(predictor: Any) -> None:
    """``serve-llm`` with ``stream: true``: OpenAI chunks whose text is the non-streamed answer."""
    openai = pytest.importorskip("openai")
    from emotion_llama.backends.llm_server import create_app as create_llm_app

    llm = getattr(predictor.llm, "backend", predictor.llm)  # past the answer cache: a real stream
    server, thread, port = run_in_thread(create_llm_app(llm, model_name="offline"))
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
        whole = client.chat.completions.create(model="offline", max_tokens=24, messages=messages)
        pieces = [
            ch.choices[0].delta.content or ""
            for ch in client.chat.completions.create(
                model="offline", max_tokens=24, messages=messages, stream=True
            )
        ]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert len(pieces) > 3 and "".join(pieces).strip() == whole.choices[0].message.content.strip() != ""


def test_json_dump_of_results_is_safe() -> None:
    from emotion_llama.serve.app import SafeJSON

    body = json.loads(SafeJSON({"a": float("nan"), "b": [1.5, float("inf")], "c": (1, 2)}).body)
    assert body == {"a": None, "b": [1.5, None], "c": [1, 2]}


@pytest.mark.slow
def test_cli_serve_starts_loads_and_stops(tmp_path: Path) -> None:
    """``emotion-llama serve``: listening at once (503 while the model loads), then ready; Ctrl-C
    stops it cleanly."""
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMOTION_LLAMA_API_KEY": "k"}
    cmd = [sys.executable, "-m", "emotion_llama.cli", "serve", "--preset", "tiny", "--port", str(port),
           "--allow-root", str(tmp_path), "--max-queue", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        status = None
        deadline = time.monotonic() + 180
        while status != "ok" and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["status"]
            time.sleep(0.5)
        assert status == "ok", proc.stdout.read().decode() if proc.poll() is not None else status
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer k"})
        assert models.json()["data"][0]["id"] == "emotion-llama-clues"  # the key came from the env
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = proc.stdout.read().decode() if proc.stdout else ""
    # uvicorn re-raises the SIGINT it caught once it has shut down: 130, as for any Ctrl-C'd program
    assert proc.returncode in (0, 130) and "Application shutdown complete" in log and "Traceback" not in log
