"""A loopback server that reads ``POST /v1/completions`` requests with ``prompt_embeds`` the way
vLLM's OpenAI-compatible server documents and does it (base64 of ``torch.save``, loaded with
``weights_only=True`` on the CPU, float32/bfloat16/float16, a leading batch dimension squeezed)
and answers each prompt by greedy decoding with a Hugging Face causal LM from those embeddings.

vLLM itself needs a CUDA GPU and does not install here; this stands in for the server side of
the protocol so that the project's client, its request bodies and its reading of the answers
are checked end to end against an independent decoder (Hugging Face's ``generate``).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch


def load_embed_as_vllm(b64: str) -> torch.Tensor:
    """One ``prompt_embeds`` entry read as vLLM's ``load_prompt_embeds`` does."""
    tensor = torch.load(
        io.BytesIO(base64.b64decode(b64, validate=True)), weights_only=True, map_location="cpu"
    )
    assert isinstance(tensor, torch.Tensor) and tensor.dtype in (torch.float32, torch.bfloat16, torch.float16)
    tensor = tensor.to_dense()
    if tensor.dim() > 2:
        tensor = tensor.squeeze(0)
        assert tensor.dim() == 2
    return tensor


@dataclass
class Reference:
    llm: Any  # a Hugging Face causal LM
    tokenizer: Any
    name: str = "merged"
    prompt_embeds_enabled: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not self.prompt_embeds_enabled:
            message = "You must set `--enable-prompt-embeds` to input `prompt_embeds`."
            return 400, {"error": {"message": message}}
        if body.get("model") != self.name:
            return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}
        entries = body["prompt_embeds"]
        entries = entries if isinstance(entries, list) else [entries]
        try:
            embeds = [load_embed_as_vllm(e) for e in entries]
        except (binascii.Error, AssertionError, RuntimeError) as exc:
            return 400, {"error": {"message": f"bad prompt_embeds: {exc}"}}
        choices = []
        dtype = next(self.llm.parameters()).dtype
        for i, e in enumerate(embeds):
            with torch.no_grad():  # vLLM casts the embeddings to the model's dtype
                ids = self.llm.generate(
                    inputs_embeds=e[None].to(dtype),
                    attention_mask=torch.ones(1, e.shape[0], dtype=torch.long),
                    max_new_tokens=int(body["max_tokens"]),
                    do_sample=float(body.get("temperature", 1.0)) > 0,
                    repetition_penalty=float(body.get("repetition_penalty", 1.0)),
                    pad_token_id=self.llm.config.eos_token_id,
                )[0].tolist()
            choice = {"index": i, "text": self.tokenizer.decode(ids, skip_special_tokens=True)}
            if body.get("return_token_ids"):
                choice["token_ids"] = ids
            choices.append({**choice, "logprobs": None, "finish_reason": "stop"})
        return 200, {"object": "text_completion", "model": self.name, "choices": choices[::-1]}


def serve(ref: Reference) -> tuple[ThreadingHTTPServer, str]:
    """The server on a free loopback port and its base URL (``http://127.0.0.1:PORT``)."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": ref.name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/completions":
                self._send(404, {"error": {"message": "not found"}})
                return
            with ref.lock:
                ref.requests.append(body)
                status, payload = ref.complete(body)
            self._send(status, payload)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"
