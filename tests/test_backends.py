import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from emotion_llama.backends.llm import (
    BackendError,
    CachedChatLLM,
    ChatLLM,
    ChatParams,
    OpenAIChatLLM,
    make_llm,
)
from emotion_llama.errors import EmotionLlamaError


class _Handler(BaseHTTPRequestHandler):
    """An OpenAI-style endpoint on loopback that fails with 503 ``fail_first`` times, then answers
    with the last user message reversed (so each answer depends on its request)."""

    fail_first = 0
    calls = 0
    lock = threading.Lock()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with _Handler.lock:
            _Handler.calls += 1
            fail = _Handler.calls <= _Handler.fail_first
        if self.path != "/v1/chat/completions" or self.headers.get("Authorization") != "Bearer k":
            self.send_response(401)
            self.end_headers()
            return
        if fail:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"busy")
            return
        text = body["messages"][-1]["content"][::-1]
        payload = json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": text}}], "model": body["model"]}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    _Handler.calls = 0
    _Handler.fail_first = 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def _conv(text):
    return [{"role": "user", "content": text}]


def test_openai_client_retries_and_keeps_order(server):
    _Handler.fail_first = 2
    llm = OpenAIChatLLM(server, "m", api_key="k", backoff=0.01, max_concurrency=3)
    assert isinstance(llm, ChatLLM)
    out = llm.chat_many([_conv("abc"), _conv("hello"), _conv("xyz")], ChatParams())
    assert out == ["cba", "olleh", "zyx"]
    assert _Handler.calls == 5  # two 503s retried


def test_openai_client_gives_up_with_a_clear_error(server):
    _Handler.fail_first = 100
    llm = OpenAIChatLLM(server, "m", api_key="k", retries=2, backoff=0.01)
    with pytest.raises(BackendError, match=r"no answer from model 'm' \(HTTP 503"):
        llm.chat_many([_conv("a")], ChatParams())
    bad_key = OpenAIChatLLM(server, "m", api_key="wrong", retries=3, backoff=0.01)
    before = _Handler.calls
    with pytest.raises(BackendError, match="HTTP 401"):
        bad_key.chat_many([_conv("a")], ChatParams())
    assert _Handler.calls == before + 1  # client errors are not retried


def test_cache_makes_a_rerun_free(server, tmp_path):
    cached = CachedChatLLM(OpenAIChatLLM(server, "m", api_key="k"), tmp_path / "c.sqlite")
    first = cached.chat_many([_conv("one"), _conv("two")], ChatParams())
    assert cached.stats.misses == 2 and _Handler.calls == 2
    again = CachedChatLLM(OpenAIChatLLM(server, "m", api_key="k"), tmp_path / "c.sqlite")
    assert again.chat_many([_conv("two"), _conv("one"), _conv("three")], ChatParams()) == [
        "owt",
        "eno",
        "eerht",
    ]
    assert (again.stats.hits, again.stats.misses) == (2, 1) and _Handler.calls == 3
    assert first == ["eno", "owt"]
    # other parameters are another key
    again.chat_many([_conv("one")], ChatParams(max_tokens=5))
    assert again.stats.misses == 2


def test_make_llm_rejects_unknown_specs():
    with pytest.raises(EmotionLlamaError, match="unknown LLM backend 'gpt'"):
        make_llm("gpt")


@pytest.mark.slow
def test_local_hf_backend_answers_and_judges(tmp_path):
    from emotion_llama.evaluate.judges import extract_emotion_words, judge_overlap

    llm = make_llm("offline", cache=tmp_path / "j.sqlite")
    assert llm.name.startswith("hf:")
    replies = llm.chat_many([_conv("What is the capital of France?")], ChatParams(max_tokens=12))
    assert "paris" in replies[0].lower()  # a real model answering, greedily
    scores = judge_overlap(
        llm, ["She smiles and sounds cheerful: happy."], ["She is happy, smiling."], "label"
    )
    assert len(scores) == 1 and isinstance(scores[0][1], str) and scores[0][1]
    words = extract_emotion_words(llm, ["He was furious and shouted, clearly angry."])
    assert isinstance(words[0], list)
    hits = llm.stats.hits
    judge_overlap(llm, ["She smiles and sounds cheerful: happy."], ["She is happy, smiling."], "label")
    assert llm.stats.hits == hits + 1


# -- device and precision of a local model ---------------------------------------------------------
def test_auto_dtype_rule():
    from emotion_llama.precision import auto_dtype as _auto_dtype

    assert _auto_dtype("cuda", cuda_bf16=True) == "bfloat16"
    assert _auto_dtype("cuda:1", cuda_bf16=True) == "bfloat16"
    assert _auto_dtype("cuda", cuda_bf16=False) == "float16"
    assert _auto_dtype("cpu", cuda_bf16=True) == "float32"
    assert _auto_dtype("mps", cuda_bf16=False) == "float32"
    assert _auto_dtype("cudax", cuda_bf16=True) == "float32"  # only CUDA devices get half precision


def test_dtype_names_are_checked_before_anything_loads():
    from emotion_llama.precision import check_dtype, resolve_dtype

    assert check_dtype(None) is None and check_dtype("auto") is None and check_dtype("AUTO") is None
    assert [check_dtype(d) for d in ("bf16", "FP16", "half", "float32")] == [
        "bfloat16",
        "float16",
        "float16",
        "float32",
    ]
    assert resolve_dtype(None, "cpu") == "float32" and resolve_dtype("fp16", "cpu") == "float16"
    for spec in ("offline", "hf:/no/such/model", "openai:m@http://127.0.0.1:9/v1"):
        with pytest.raises(
            EmotionLlamaError, match=r"unknown LLM dtype 'float8'.*float32, float16 or bfloat16"
        ):
            make_llm(spec, dtype="float8")


@pytest.mark.slow
def test_local_backend_name_is_stable_for_the_cpu_default_and_marks_other_precisions():
    import torch

    from emotion_llama.sources import hf_model_dir

    path = hf_model_dir("smollm2_135m_instruct")
    default = make_llm("offline")  # cpu, auto dtype: float32
    assert default.name == f"hf:{path}|rep1.1"  # the name before dtypes existed: cached answers still hit
    assert next(default.model.parameters()).dtype == torch.float32
    assert make_llm("offline", device="cpu", dtype="float32").name == default.name
    half = make_llm(f"hf:{path}", dtype="bf16")
    assert half.name == default.name + "|bfloat16"
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert half.chat_many([_conv("Say hi.")], ChatParams(max_tokens=4))[0]
    with pytest.raises(BackendError, match="on device 'nodevice'"):
        make_llm("offline", device="nodevice")
