import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from emotion_llama.backends.llm import OpenAIChatLLM
from emotion_llama.backends.vlm import VisualDescriber, clean_description, make_describer
from emotion_llama.errors import EmotionLlamaError


class _VisionHandler(BaseHTTPRequestHandler):
    """An OpenAI-style vision endpoint on loopback that checks the image it is sent (a JPEG data
    URL of the frame) and answers with the frame's mean colour in words, so the answer depends on
    the image actually received."""

    seen: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        parts = body["messages"][0]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        assert url.startswith("data:image/jpeg;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        _VisionHandler.seen.append(img.size)
        red = np.asarray(img)[..., 0].mean() > 128
        text = (
            "The person in the image is standing in a red room."
            if red
            else "The person is sitting at a desk."
        )
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture()
def vision_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _VisionHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_describer_sends_the_frame_and_cleans_the_answer(vision_server):
    _VisionHandler.seen = []
    red = np.zeros((720, 1280, 3), dtype=np.uint8)
    red[..., 0] = 220
    dark = np.zeros((100, 80, 3), dtype=np.uint8)
    describer = VisualDescriber(OpenAIChatLLM(vision_server, "vl-model"))
    assert describer.describe([red, dark]) == ["standing in a red room", "sitting at a desk"]
    assert (512, 288) in _VisionHandler.seen  # downscaled to 512 on the long side, aspect kept


def test_visual_objective_enters_the_caption():
    from emotion_llama.annotate.pipeline import add_visual_objective

    rec = {
        "visual_expression": "lip corner puller",
        "audio_tone": "a loud voice",
        "subtitle": "hello",
        "visual_objective": None,
        "caption": "",
        "missing": [],
    }
    add_visual_objective(rec, "sitting at a desk", "vlm")
    assert rec["caption"] == (
        "This person in the video is sitting at a desk. The person's expression and actions include "
        "lip corner puller, and the person's tone is a loud voice. Saying: hello"
    )
    add_visual_objective(rec2 := {**rec, "visual_objective": None, "missing": []}, None, "vlm")
    assert rec2["visual_objective"] is None and rec2["missing"] == [
        "visual objective: vlm gave no description"
    ]


def test_clean_description_and_spec_errors():
    assert clean_description("The woman in the video is talking to a man.\nMore text") == "talking to a man"
    assert clean_description("   ") is None
    assert make_describer(None) is None
    with pytest.raises(EmotionLlamaError, match="openai:MODEL@BASE_URL"):
        make_describer("offline")
