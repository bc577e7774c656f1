"""Text LLM backends behind one small Protocol: judges, label extraction and (later) the clue
pipeline's reasoning all talk to a :class:`ChatLLM`.

- :class:`HFChatLLM`: a local Hugging Face causal LM with its chat template (greedy by default).
- :class:`OpenAIChatLLM`: any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, Ollama,
  llama.cpp server, hosted APIs), with a timeout, retries with exponential back-off and a
  concurrency limit.
- :class:`CachedChatLLM`: wraps either; answers are stored in SQLite keyed by (model, messages,
  parameters), so a rerun costs nothing and the cache reports hits.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from emotion_llama.backends.http import HTTPFailure, json_headers, post_json
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.tokenizer import batch_decode
from emotion_llama.precision import check_dtype, resolve_dtype

Message = dict[str, str]


@dataclass(frozen=True)
class ChatParams:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0

    def key(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p}


@runtime_checkable
class ChatLLM(Protocol):
    """A chat model: a list of ``{"role", "content"}`` messages in, the reply text out."""

    #: Model name and version, written into every report that used it.
    name: str

    def chat_many(self, conversations: Sequence[list[Message]], params: ChatParams) -> list[str]: ...


class BackendError(EmotionLlamaError):
    """The backend could not answer (after retries)."""


# -- device and precision: emotion_llama.precision (one rule for the model and a local LLM) --------


# -- local Hugging Face model ----------------------------------------------------------------------
class HFChatLLM:
    """A local causal LM (a hub id or a folder) applied with its chat template, in batches with left
    padding. Loading happens once, at construction. ``dtype``: float32, float16 or bfloat16, or
    ``None``/``"auto"`` for the device's default (see :func:`resolve_dtype`)."""

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "cpu",
        dtype: str | None = "float32",
        batch_size: int = 8,
        revision: str | None = None,
        repetition_penalty: float = 1.1,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per load is noise in a CLI that loads once
        self.path = str(model)
        dtype = resolve_dtype(dtype, device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, revision=revision)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.path, dtype=getattr(torch, dtype), revision=revision
            )
        except OSError as exc:
            raise BackendError(f"cannot load the local LLM {self.path!r}: {exc}") from None
        try:
            self.model = self.model.to(device)
        except (RuntimeError, AssertionError, ValueError) as exc:  # no such device, no CUDA build...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = f"the local LLM {self.path!r} on device {device!r}"
            raise BackendError(f"cannot put {where}: {first}") from None
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device
        self.batch_size = batch_size
        self.repetition_penalty = repetition_penalty
        cfg = self.model.config
        self.name = f"hf:{getattr(cfg, '_name_or_path', self.path) or self.path}"
        if repetition_penalty != 1.0:  # part of the name: cached answers depend on it
            self.name += f"|rep{repetition_penalty:g}"
        self.dtype = dtype
        if dtype != "float32":  # answers differ by precision; float32 keeps the old name (cache key)
            self.name += f"|{dtype}"

    def chat_many(self, conversations: Sequence[list[Message]], params: ChatParams) -> list[str]:
        import torch

        out: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            texts = [
                self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                for c in chunk
            ]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            sample = params.temperature > 0
            # Small local models fall into loops under greedy decoding ("- Happy: happy" x 40); a
            # mild penalty (the authors' demo used 1.05) keeps their answers readable.
            kwargs: dict[str, Any] = {
                "max_new_tokens": params.max_tokens,
                "do_sample": sample,
                "repetition_penalty": self.repetition_penalty,
            }
            if sample:
                kwargs.update(temperature=params.temperature, top_p=params.top_p)
            with torch.no_grad():
                ids = self.model.generate(**enc, **kwargs, pad_token_id=self.tokenizer.pad_token_id)
            new = ids[:, enc["input_ids"].shape[1] :]
            out.extend(t.strip() for t in batch_decode(self.tokenizer, new))
        return out

    def chat_stream(self, conversation: list[Message], params: ChatParams) -> Iterator[str]:
        """The reply to one conversation as text pieces, as the model writes them (the same
        decoding as :meth:`chat_many`, so the pieces join to its answer up to surrounding space)."""
        import torch
        from transformers import TextIteratorStreamer

        text = self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        enc = self.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sample = params.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "do_sample": sample,
            "repetition_penalty": self.repetition_penalty,
            "streamer": streamer,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(**enc, **kwargs)
            except BaseException as exc:  # handed to the caller below
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        first = True
        for piece in streamer:
            if first:
                piece = piece.lstrip()
                first = not piece
            if piece:
                yield piece
        worker.join()
        if errors:
            raise BackendError(f"local LLM {self.path!r} failed while streaming: {errors[0]}")


# -- OpenAI-compatible HTTP endpoint ---------------------------------------------------------------
class OpenAIChatLLM:
    """``POST {base_url}/chat/completions`` with retries on 429, 5xx and network errors."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 1.0,
        max_concurrency: int = 4,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_concurrency = max(1, max_concurrency)
        self.name = f"openai-compatible:{model}@{self.base_url}"

    def _post(self, messages: list[Message], params: ChatParams) -> str:
        url = f"{self.base_url}/chat/completions"
        payload = {"model": self.model, "messages": messages, **params.key()}
        try:
            data = post_json(
                url,
                payload,
                api_key=self.api_key,
                timeout=self.timeout,
                retries=self.retries,
                backoff=self.backoff,
            )
            return str(data["choices"][0]["message"]["content"] or "").strip()
        except HTTPFailure as exc:
            last = exc.detail
        except (KeyError, IndexError, TypeError) as exc:
            last = f"malformed response ({exc})"
        raise BackendError(f"{url}: no answer from model {self.model!r} ({last})")

    def chat_many(self, conversations: Sequence[list[Message]], params: ChatParams) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(lambda c: self._post(c, params), conversations))

    def chat_stream(self, conversation: list[Message], params: ChatParams) -> Iterator[str]:
        """``stream: true``: the content deltas of the server-sent events, as they arrive. No retry
        once text has been yielded (it would repeat it); before that, as :meth:`chat_many`."""
        body = json.dumps(
            {"model": self.model, "messages": conversation, **params.key(), "stream": True}
        ).encode()
        url = f"{self.base_url}/chat/completions"
        headers = json_headers(self.api_key, accept="text/event-stream")
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode("utf-8", "replace")
            raise BackendError(f"{url}: HTTP {exc.code} from model {self.model!r}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise BackendError(f"{url}: no answer from model {self.model!r} ({exc})") from None
        with resp:
            for raw in resp:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                except (ValueError, KeyError, IndexError) as exc:
                    raise BackendError(f"{url}: malformed stream event ({exc})") from None
                if delta:
                    yield str(delta)


# -- response cache --------------------------------------------------------------------------------
@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


@dataclass
class CachedChatLLM:
    """Answers cached in SQLite under sha256(model name, messages, parameters)."""

    backend: ChatLLM
    path: Path
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")

    @property
    def name(self) -> str:
        return self.backend.name

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def _key(self, messages: list[Message], params: ChatParams) -> str:
        blob = json.dumps([self.backend.name, messages, params.key()], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def chat_many(self, conversations: Sequence[list[Message]], params: ChatParams) -> list[str]:
        keys = [self._key(c, params) for c in conversations]
        with self._lock, self._db() as db:
            found = (
                dict(
                    db.execute(
                        f"SELECT key, answer FROM answers WHERE key IN ({','.join('?' * len(keys))})", keys
                    ).fetchall()
                )
                if keys
                else {}
            )
        todo = [i for i, k in enumerate(keys) if k not in found]
        self.stats.hits += len(keys) - len(todo)
        self.stats.misses += len(todo)
        if todo:
            answers = self.backend.chat_many([conversations[i] for i in todo], params)
            with self._lock, self._db() as db:
                db.executemany(
                    "INSERT OR REPLACE INTO answers (key, answer) VALUES (?, ?)",
                    [(keys[i], a) for i, a in zip(todo, answers, strict=True)],
                )
            for i, a in zip(todo, answers, strict=True):
                found[keys[i]] = a
        return [found[k] for k in keys]

    def chat_stream(self, conversation: list[Message], params: ChatParams) -> Iterator[str]:
        """A cached answer comes as one piece; a new one streams from the backend and is stored
        once complete (an interrupted stream stores nothing)."""
        key = self._key(conversation, params)
        with self._lock, self._db() as db:
            row = db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        if row is not None:
            self.stats.hits += 1
            yield str(row[0])
            return
        self.stats.misses += 1
        pieces: list[str] = []
        for piece in stream_chat(self.backend, conversation, params):
            pieces.append(piece)
            yield piece
        with self._lock, self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO answers (key, answer) VALUES (?, ?)", (key, "".join(pieces).strip())
            )


def merge_caches(sources: Sequence[str | Path], into: str | Path) -> int:
    """Add the answers of the caches ``sources`` (the shards' ``llm_cache.sqlite``) to the cache
    ``into``, keeping the answers it already has: a later run over the merged dataset asks the LLM
    nothing a shard asked. Returns how many answers were added."""
    into = Path(into)
    into.parent.mkdir(parents=True, exist_ok=True)
    added = 0
    db = sqlite3.connect(into, timeout=30)
    try:
        with db:  # one transaction, committed at the end
            db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
            for src in sources:
                if not Path(src).is_file():
                    continue
                other = sqlite3.connect(f"file:{Path(src).resolve()}?mode=ro", uri=True, timeout=30)
                try:
                    rows = other.execute("SELECT key, answer FROM answers ORDER BY key").fetchall()
                finally:
                    other.close()
                before = db.total_changes
                db.executemany("INSERT OR IGNORE INTO answers (key, answer) VALUES (?, ?)", rows)
                added += db.total_changes - before
    finally:
        db.close()
    return added


def stream_chat(llm: ChatLLM, conversation: list[Message], params: ChatParams) -> Iterator[str]:
    """Text pieces of the reply: streamed where the backend can, else its whole answer at once."""
    stream = getattr(llm, "chat_stream", None)
    if stream is None:
        yield llm.chat_many([conversation], params)[0]
        return
    yield from stream(conversation, params)


def make_llm(
    spec: str,
    *,
    cache: Path | None = None,
    api_key: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
) -> ChatLLM:
    """A backend from a short spec: ``hf:PATH_OR_ID``, ``offline`` (the offline SmolLM2 of
    ``emotion_llama.sources``) or ``openai:MODEL@BASE_URL``; wrapped in a cache when given.

    ``device`` and ``dtype`` place a local model (``hf:`` and ``offline``); ``dtype=None`` is the
    device's default: bfloat16 on a CUDA GPU that supports it, else float16 on CUDA, float32
    elsewhere. A remote endpoint ignores both (the dtype name is still checked)."""
    check_dtype(dtype)
    backend: ChatLLM
    if spec == "offline":
        from emotion_llama.sources import hf_model_dir

        backend = HFChatLLM(hf_model_dir("smollm2_135m_instruct"), device=device, dtype=dtype)
    elif spec.startswith("hf:"):
        backend = HFChatLLM(spec[3:], device=device, dtype=dtype)
    elif spec.startswith("openai:") and "@" in spec:
        model, url = spec[len("openai:") :].rsplit("@", 1)
        backend = OpenAIChatLLM(url, model, api_key=api_key)
    else:
        raise EmotionLlamaError(
            f"unknown LLM backend {spec!r}: use 'offline', 'hf:PATH_OR_HUB_ID' or 'openai:MODEL@BASE_URL'"
        )
    return CachedChatLLM(backend, cache) if cache is not None else backend
