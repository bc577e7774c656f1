"""vLLM as the decoding engine of the model: the project computes each clip's prompt embeddings
(its tokens with the 260 feature vectors written in, exactly what :meth:`EmotionLlama.generate`
feeds Hugging Face's ``generate``) and vLLM decodes from them.

vLLM takes embeddings instead of token ids since 0.9 (``enable_prompt_embeds``):

- offline, in this process: ``LLM(model, enable_prompt_embeds=True).generate([{"prompt_embeds":
  tensor}], SamplingParams(...))`` (:class:`VllmOffline`);
- from a server started with ``vllm serve MODEL --enable-prompt-embeds``: ``POST /v1/completions``
  with ``"prompt_embeds"``, a list of base64 strings of ``torch.save`` of one (L, H) tensor each
  (:class:`VllmServer`; the server loads them with ``torch.load(..., weights_only=True)``).

vLLM serves the LLM only: the merged export's ``llm/`` folder (``emotion-llama export-merged``),
or the base LLM with the checkpoint's LoRA as an adapter (``export-merged --adapter``; ``vllm
serve BASE --enable-lora --lora-modules NAME=ADAPTER --max-lora-rank R``). The LoRA does not touch
the token embeddings, so the embeddings the project computes are the same either way.

Decoding is greedy (temperature 0, no repetition penalty, stop at the end-of-sequence token), as
the Hugging Face path's evaluation decoding, and the answer's token ids are decoded by the
project's tokenizer, so both engines clean the same text the same way
(:func:`~emotion_llama.prompts.clean_generation`). Each prompt goes unpadded, at positions 0..L-1:
what a left-padded row of the batched Hugging Face call sees (its positions count real tokens).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.model.generation import ClipInput, build_inputs, model_device
from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.model.tokenizer import batch_decode
from emotion_llama.prompts import clean_generation

VLLM_HINT = "pip install 'emotion-llama[vllm]' (vLLM runs on a CUDA GPU)"
#: The share of the GPU's memory vLLM may take in this process: the project's ViT, encoders and
#: embedding table stay beside it.
GPU_MEMORY_SHARE = 0.8


class VllmError(EmotionLlamaError):
    """vLLM could not be used or did not answer."""


# -- the prompts -----------------------------------------------------------------------------------
@torch.no_grad()
def clip_prompt_embeds(
    model: EmotionLlama,
    processor: EmotionLlamaProcessor,
    clips: Sequence[ClipInput],
    *,
    task: str = "emotion",
    instruction: str | None = None,
) -> list[torch.Tensor]:
    """Each clip's prompt as (L_i, H) embeddings on the CPU, without padding, in the model's
    dtype: the rows of the batch :meth:`EmotionLlama.generate` would decode from."""
    inputs = build_inputs(processor, clips, task=task, instruction=instruction, device=model_device(model))
    embeds, _ = model.embed_inputs(inputs)
    mask = inputs.attention_mask.bool()
    return [row[keep].detach().to("cpu").contiguous() for row, keep in zip(embeds, mask, strict=True)]


def encode_embeds(tensor: torch.Tensor) -> str:
    """One prompt's embeddings as vLLM's server reads them: base64 of ``torch.save`` of the
    (L, H) tensor (float32, bfloat16 or float16)."""
    if tensor.dim() != 2:
        raise VllmError(f"prompt embeddings must be (length, hidden), not {tuple(tensor.shape)}")
    if tensor.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise VllmError(f"vLLM takes float32, bfloat16 or float16 embeddings, not {tensor.dtype}")
    buffer = io.BytesIO()
    torch.save(tensor.detach().to("cpu").contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass(frozen=True)
class Greedy:
    """The decoding both engines run: greedy up to ``max_tokens`` new tokens."""

    max_tokens: int

    def request_fields(self) -> dict[str, Any]:
        """The sampling fields of a ``/v1/completions`` request. ``repetition_penalty`` is given
        so that a ``generation_config.json`` in the served folder cannot change it;
        ``return_token_ids`` asks for the answer's ids (vLLM >= 0.10.2), decoded here."""
        return {
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "top_p": 1.0,
            "n": 1,
            "repetition_penalty": 1.0,
            "skip_special_tokens": True,
            "return_token_ids": True,
        }


def completion_request(model_name: str, embeds: Sequence[torch.Tensor], decode: Greedy) -> dict[str, Any]:
    """The ``POST /v1/completions`` body for a batch of prompts given as embeddings."""
    if not embeds:
        raise VllmError("no prompts given")
    return {
        "model": model_name,
        "prompt_embeds": [encode_embeds(e) for e in embeds],
        **decode.request_fields(),
    }


Answer = list[int] | str


def completion_answers(response: Any, count: int) -> list[Answer]:
    """The answers of a ``/v1/completions`` response in prompt order: each choice's
    ``token_ids`` when the server gave them, else its ``text``."""
    try:
        choices = sorted(response["choices"], key=lambda c: int(c["index"]))
        out: list[Answer] = [
            [int(t) for t in c["token_ids"]] if c.get("token_ids") is not None else str(c["text"])
            for c in choices
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise VllmError(f"malformed completions response ({type(exc).__name__}: {exc})") from None
    if len(out) != count:
        raise VllmError(f"the server answered {len(out)} of {count} prompts")
    return out


def answer_texts(tokenizer: Any, answers: Sequence[Answer]) -> list[str]:
    """The answers as the Hugging Face path's text: ids decoded by the project's tokenizer
    (special tokens dropped), then :func:`clean_generation`."""
    texts = [a if isinstance(a, str) else batch_decode(tokenizer, [a])[0] for a in answers]
    return [clean_generation(t) for t in texts]


# -- the engines -----------------------------------------------------------------------------------
class Backend(Protocol):
    name: str

    def complete(self, embeds: Sequence[torch.Tensor], decode: Greedy) -> list[Answer]: ...


class VllmServer:
    """A running ``vllm serve ... --enable-prompt-embeds``: ``url`` is its base (``http://HOST:PORT``
    or ``.../v1``); ``model`` the served name (default: the one the server lists).

    A batch goes as requests of at most ``max_prompts`` prompts (a 4096-wide bfloat16 prompt of
    330 positions is 3.6 MB of base64), ``concurrency`` of them in flight: the server's continuous
    batching runs them together."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        retries: int = 2,
        max_prompts: int = 16,
        concurrency: int = 4,
    ) -> None:
        base = url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else f"{base}/v1"
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.max_prompts = max(1, max_prompts)
        self.concurrency = max(1, concurrency)
        self.model = model or self._only_model()
        self.name = f"vllm:{self.model}@{self.base_url}"

    def _only_model(self) -> str:
        from emotion_llama.backends.http import HTTPFailure, get_json

        url = f"{self.base_url}/models"
        try:
            ids = [str(m["id"]) for m in get_json(url, api_key=self.api_key)["data"]]
        except HTTPFailure as exc:
            raise VllmError(f"no vLLM server at {self.base_url}: {exc.detail}") from None
        except (KeyError, TypeError) as exc:
            raise VllmError(f"{url}: not an OpenAI model list ({exc})") from None
        if len(ids) != 1:
            raise VllmError(
                f"{url} serves {len(ids)} models ({', '.join(ids) or 'none'}): name one with --vllm-model"
            )
        return ids[0]

    def complete(self, embeds: Sequence[torch.Tensor], decode: Greedy) -> list[Answer]:
        chunks = [embeds[i : i + self.max_prompts] for i in range(0, len(embeds), self.max_prompts)]
        if len(chunks) <= 1:
            return self._request(embeds, decode)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chunks))) as pool:
            parts = list(pool.map(lambda chunk: self._request(chunk, decode), chunks))
        return [answer for part in parts for answer in part]

    def _request(self, embeds: Sequence[torch.Tensor], decode: Greedy) -> list[Answer]:
        from emotion_llama.backends.http import HTTPFailure, post_json

        url = f"{self.base_url}/completions"
        try:
            response = post_json(
                url,
                completion_request(self.model, embeds, decode),
                api_key=self.api_key,
                timeout=self.timeout,
                retries=self.retries,
            )
        except HTTPFailure as exc:
            hint = ""
            if "prompt_embeds" in exc.detail or "prompt-embeds" in exc.detail:
                hint = " (start the server with `vllm serve MODEL --enable-prompt-embeds`)"
            raise VllmError(f"vLLM server {self.base_url}: {exc.detail}{hint}") from None
        return completion_answers(response, len(embeds))


def import_vllm() -> Any:
    """The ``vllm`` package, or an error saying how to get it."""
    try:
        import vllm
    except ImportError as exc:
        raise VllmError(
            f"--engine vllm without --vllm-url runs vLLM in this process: {VLLM_HINT} ({exc})"
        ) from None
    return vllm


class VllmOffline:
    """vLLM in this process on ``model`` (a folder vLLM loads: the merged export's ``llm/``, or the
    base LLM with ``lora``, a PEFT adapter folder of rank up to ``max_lora_rank``)."""

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: str = "auto",
        lora: str | Path | None = None,
        max_lora_rank: int = 64,
        gpu_memory_utilization: float = GPU_MEMORY_SHARE,
        **engine_args: Any,
    ) -> None:
        vllm = import_vllm()
        args: dict[str, Any] = {"enable_prompt_embeds": True, "dtype": dtype, **engine_args}
        args["gpu_memory_utilization"] = gpu_memory_utilization
        self._lora: Any = None
        if lora is not None:
            from vllm.lora.request import LoRARequest

            args.update(enable_lora=True, max_lora_rank=max_lora_rank)
            self._lora = LoRARequest("emotion-llama", 1, str(lora))
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(model), **args)
        self.name = f"vllm:{model}" + (f"+{lora}" if lora is not None else "")

    def complete(self, embeds: Sequence[torch.Tensor], decode: Greedy) -> list[Answer]:
        fields = decode.request_fields()
        params = self._vllm.SamplingParams(
            temperature=0.0,
            top_p=1.0,
            max_tokens=fields["max_tokens"],
            repetition_penalty=1.0,
            skip_special_tokens=True,
        )
        prompts = [{"prompt_embeds": e} for e in embeds]
        outputs = self.llm.generate(prompts, params, lora_request=self._lora, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]


@dataclass(frozen=True)
class VllmSpec:
    """Where vLLM runs, as the command line says it: ``url`` (a server) or ``model`` (a folder
    for vLLM in this process, with ``lora`` an adapter on it)."""

    url: str | None = None
    model: str | None = None
    lora: str | None = None

    def backend(self, dtype: torch.dtype | None = None) -> Backend:
        if self.url:
            if self.lora:
                raise VllmError(
                    "--vllm-lora is for vLLM in this process; a server gets its adapter from "
                    "`vllm serve BASE --enable-lora --lora-modules NAME=ADAPTER` (then --vllm-model NAME)"
                )
            return VllmServer(self.url, self.model)
        if not self.model:
            raise VllmError(
                "--engine vllm needs --vllm-url (a running `vllm serve ... --enable-prompt-embeds`) "
                "or --vllm-model (the merged export's llm/ folder for vLLM in this process)"
            )
        return VllmOffline(self.model, dtype=dtype_name(dtype), lora=self.lora)

    def before_load(self) -> Backend | None:
        """What can be checked before the checkpoint loads: a server, connected; for vLLM in this
        process, the options and the package (it starts in :meth:`after_load`)."""
        if self.url:
            return self.backend()
        if not self.model:
            self.backend()  # says what is missing
        import_vllm()
        return None

    def after_load(self, model: EmotionLlama, early: Backend | None) -> Backend:
        """The model's decoder freed (vLLM has its own), then the engine: ``early``'s server, or
        vLLM in this process in the model's dtype, on the GPU memory just freed."""
        drop_decoder(model)
        return early or self.backend(model.llama_proj.weight.dtype)


def dtype_name(dtype: torch.dtype | None) -> str:
    """vLLM's ``dtype`` argument for a torch dtype (``auto``: the model folder's own)."""
    names = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
    return names.get(dtype, "auto") if dtype is not None else "auto"


def drop_decoder(model: EmotionLlama) -> EmotionLlama:
    """Free the LLM's decoder layers and output head, which vLLM has its own copy of: what is left
    (the ViT, the projections, the token embeddings) computes the prompts. Returns ``model``."""
    llm = model.llm
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    inner = getattr(base, "model", None)
    if inner is None or not hasattr(inner, "layers"):
        raise VllmError(f"cannot find the decoder layers of {type(base).__name__}")
    inner.layers = torch.nn.ModuleList()
    if hasattr(base, "lm_head"):
        base.lm_head = torch.nn.Identity()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return model


class VllmGenerator:
    """:class:`~emotion_llama.model.generation.Generator`'s greedy answers, decoded by vLLM."""

    def __init__(
        self,
        model: EmotionLlama,
        processor: EmotionLlamaProcessor,
        backend: Backend,
        *,
        task: str = "emotion",
        instruction: str | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.backend = backend
        self.task = task
        self.instruction = instruction
        self.decode = Greedy(max_new_tokens or model.config.prompt.max_eval_answer_tokens)

    def __call__(self, clips: Sequence[ClipInput]) -> list[str]:
        embeds = clip_prompt_embeds(
            self.model, self.processor, clips, task=self.task, instruction=self.instruction
        )
        return answer_texts(self.processor.tokenizer, self.backend.complete(embeds, self.decode))
