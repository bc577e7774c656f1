"""The web page in a real browser: the real server (``create_app`` with the tiny preset and the
offline LLM, uvicorn on loopback) and headless Chromium driven by Playwright. The page uploads a
real clip, shows the label, streams the reasoning, shows the peak frame and draws the AU timeline;
a text file gets the server's 415 message. Slow.

Playwright uses the system Chromium (``apt-get install chromium``; scripts/setup.sh does), never a
browser of its own: set ``EMOTION_LLAMA_CHROMIUM`` to another executable if needed. The screenshots
go to ``tests/output/`` (or ``EMOTION_LLAMA_TEST_OUTPUT``)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from emotion_llama.errors import EmotionLlamaError

pytestmark = pytest.mark.slow

OUTPUT = Path(os.environ.get("EMOTION_LLAMA_TEST_OUTPUT", Path(__file__).parent / "output"))


def _chromium() -> str:
    for cand in (
        os.environ.get("EMOTION_LLAMA_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ):
        if cand and Path(cand).exists():
            return cand
    pytest.skip("no system Chromium (apt-get install chromium, or set EMOTION_LLAMA_CHROMIUM)")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from emotion_llama.media.samples import make_speaking_clip, real_media_dir

    out = tmp_path_factory.mktemp("web") / "happy_news.mp4"
    try:
        face = real_media_dir() / "WolfgangLanger_Pexels.mp4"
        return make_speaking_clip(face, "This is the best day of my whole life.", out, start=8.0, seconds=2.5)
    except EmotionLlamaError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def predictor():
    from emotion_llama.serve.predictor import Predictor

    with Predictor(preset="tiny", llm="offline") as p:
        yield p


def _serve(predictor, **settings):
    """The real app on 127.0.0.1, a free port, uvicorn in a thread; yields its URL, then stops it."""
    pytest.importorskip("uvicorn")
    from emotion_llama.serve.app import ServeSettings, create_app, run_in_thread

    srv, thread, port = run_in_thread(create_app(predictor, ServeSettings(**settings)), host="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=60)


@pytest.fixture(scope="module")
def server(predictor):
    yield from _serve(predictor)


@pytest.fixture()
def keyed_server(predictor):
    yield from _serve(predictor, api_key="s3cret-key")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    exe = _chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=exe,
            headless=True,
            # root in a container has no user namespace sandbox; fake camera for MediaRecorder
            args=["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"],
        )
        try:
            yield b
        finally:
            b.close()


def _save(page, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


# Counts the reasoning element's updates: more than one means the text arrived in pieces.
_WATCH = """() => {
  window.__reasoningUpdates = 0;
  new MutationObserver(() => { window.__reasoningUpdates += 1; })
    .observe(document.getElementById('reasoning'), {childList: true, characterData: true, subtree: true});
}"""

# Pixels of the AU canvas that are neither white nor the grey of the grid and text: the AU lines.
_INKED = """() => {
  const c = document.getElementById('au-canvas');
  if (c.hidden || !c.width || !c.height) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
    if (Math.max(r, g, b) - Math.min(r, g, b) > 60) n++;
  }
  return n;
}"""


def test_page_analyzes_a_clip(server, browser, clip):
    from emotion_llama.annotate.clues import AU_LABEL_RULES
    from emotion_llama.prompts import LABELS

    page = browser.new_page(viewport={"width": 1200, "height": 900})
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.text} {m.location}") if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.goto(server + "/")
    assert page.title() == "Emotion-LLaMA"
    assert page.get_by_label("Video file").is_visible()
    assert page.locator("#record-box").is_visible()  # 127.0.0.1 is a secure context with a camera

    page.evaluate(_WATCH)
    t0 = time.perf_counter()
    page.get_by_label("Video file").set_input_files(str(clip))
    page.get_by_role("button", name="Analyze").click()
    page.wait_for_function("document.getElementById('label').dataset.label !== ''", timeout=240_000)
    t_label = time.perf_counter() - t0
    page.wait_for_function("document.body.dataset.state !== 'running'", timeout=240_000)
    t_all = time.perf_counter() - t0
    print(f"label after {t_label:.1f} s, everything after {t_all:.1f} s")

    assert page.evaluate("document.body.dataset.state") == "done", page.locator("#error").inner_text()
    assert page.locator("#progress").is_hidden()
    label = page.locator("#label").inner_text().strip().lower()
    assert label in set(LABELS) | set(AU_LABEL_RULES), label
    reasoning = page.locator("#reasoning").inner_text().strip()
    assert len(reasoning.split()) >= 5, reasoning
    # the label came first; the reasoning arrives once checked for faithfulness
    assert page.evaluate("window.__reasoningUpdates") >= 1
    assert page.evaluate("document.getElementById('peak-frame').naturalWidth") > 0
    assert page.evaluate("document.getElementById('au-canvas').dataset.drawn") == "1"
    assert page.evaluate(_INKED) > 200  # the AU lines were drawn
    assert page.locator("#au-legend li").count() >= 1
    assert "best day" in page.locator("#clue-transcript").inner_text().lower()  # the speech, transcribed
    assert page.locator("#clue-expression").inner_text().strip()
    assert not console, console
    _save(page, "web_demo.png")

    # a narrow screen: one column, nothing wider than the viewport
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(400)  # the canvas redraws on resize
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert page.evaluate(_INKED) > 100
    _save(page, "web_demo_narrow.png")
    page.close()


def test_page_shows_the_servers_error(server, browser, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    page = browser.new_page()
    page.goto(server + "/")
    page.get_by_label("Video file").set_input_files(str(notes))
    page.get_by_role("button", name="Analyze").click()
    err = page.get_by_role("alert")
    err.wait_for(state="visible", timeout=60_000)
    assert page.evaluate("document.body.dataset.state") == "error"
    text = err.inner_text()
    assert "415" in text and "not a video" in text, text
    assert page.locator("#results").is_hidden()
    _save(page, "web_error.png")
    page.close()


def test_page_records_from_the_camera(server, browser):
    """MediaRecorder with Chromium's fake camera (a test pattern, no face, a beep): the webm the page
    records is accepted and analysed; without a face the page says so instead of a label."""
    page = browser.new_page()
    page.goto(server + "/")
    record = page.get_by_role("button", name="Start camera")
    assert record.is_visible()
    record.click()
    page.get_by_role("button", name="Stop recording").wait_for(state="visible", timeout=15_000)
    page.wait_for_timeout(2500)
    page.get_by_role("button", name="Stop recording").click()
    page.wait_for_function("/Recorded/.test(document.getElementById('record-status').textContent)")
    page.get_by_role("button", name="Analyze").click()
    page.wait_for_function("document.body.dataset.state !== 'running'", timeout=240_000)
    assert page.evaluate("document.body.dataset.state") == "done", page.locator("#error").inner_text()
    missing = page.locator("#missing").inner_text()
    assert "face" in missing.lower(), missing
    assert page.locator("#peak-none").is_visible()  # no face: no peak frame, said so
    _save(page, "web_record.png")
    page.close()


def test_page_api_key_and_busy_server(keyed_server, browser, clip):
    """Without the key: the 401 message; the key typed in is kept (localStorage) and sent as a
    Bearer token; a 429 from the server (here faked on the chat call) is shown with its message."""
    page = browser.new_page()
    page.goto(keyed_server + "/")
    page.get_by_label("Video file").set_input_files(str(clip))
    page.get_by_role("button", name="Analyze").click()
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=60_000)
    text = page.get_by_role("alert").inner_text()
    assert "401" in text and "API key" in text, text

    page.locator("#key-box summary").click()
    page.get_by_label("API key").fill("s3cret-key")
    page.get_by_label("API key").dispatch_event("change")
    page.reload()
    assert page.get_by_label("API key").input_value() == "s3cret-key"  # kept across visits

    sent: list[str | None] = []
    page.on("request", lambda r: "/v1/files" in r.url and sent.append(r.headers.get("authorization")))
    busy = {"error": {"message": "the server is busy (1 running, 8 waiting); retry later",
                      "type": "rate_limit_error", "code": "queue_full"}}  # fmt: skip
    page.route("**/v1/chat/completions", lambda route: route.fulfill(status=429, json=busy))
    page.get_by_label("Video file").set_input_files(str(clip))
    page.get_by_role("button", name="Analyze").click()
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=60_000)
    text = page.get_by_role("alert").inner_text()
    assert "429" in text and "busy" in text, text
    assert sent and sent[0] == "Bearer s3cret-key"
    page.close()
