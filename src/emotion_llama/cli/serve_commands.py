"""serve-llm (the clue pipeline's LLM over the OpenAI protocol) and serve (the predictor over HTTP)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from emotion_llama.cli.common import (
    AsrModelOpt,
    CompileOpt,
    Fp8Opt,
    FullModelOpt,
    LanguageOpt,
    LLMDtypeOpt,
    LLMOpt,
    LoadIn4bitOpt,
    LoadIn8bitOpt,
    MaxNewTokensOpt,
    ModelDeviceOpt,
    ModelDtypeOpt,
    PresetOpt,
    VllmLoraOpt,
    VllmModelOpt,
    VllmUrlOpt,
    _fail,
    _speech_options,
    app,
    console,
    err_console,
)
from emotion_llama.errors import EmotionLlamaError

if TYPE_CHECKING:
    from emotion_llama.model.vllm_engine import VllmSpec


@app.command("serve-llm")
def serve_llm(
    llm: LLMOpt = "offline",
    device: Annotated[str, typer.Option(help="Device for a local --llm: cpu, cuda...")] = "cpu",
    llm_dtype: LLMDtypeOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8001,
) -> None:
    """Serve the clue pipeline's LLM over the OpenAI chat-completions protocol (share one loaded
    model between runs and machines: --llm openai:MODEL@http://HOST:PORT/v1)."""
    import uvicorn

    from emotion_llama.backends.llm import make_llm
    from emotion_llama.backends.llm_server import create_app

    app_ = create_app(make_llm(llm, device=device, dtype=llm_dtype), model_name=llm)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command()
def serve(
    model: FullModelOpt = None,
    llm: LLMOpt = "offline",
    preset: PresetOpt = "paper",
    device: ModelDeviceOpt = "cpu",
    dtype: ModelDtypeOpt = None,
    load_in_8bit: LoadIn8bitOpt = False,
    load_in_4bit: LoadIn4bitOpt = False,
    fp8: Fp8Opt = False,
    llm_dtype: LLMDtypeOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    language: LanguageOpt = None,
    asr_model: AsrModelOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every one).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    allow_root: Annotated[
        list[Path] | None,
        typer.Option("--allow-root", help="A folder whose videos clients may name by path (repeatable)."),
    ] = None,
    allow_url_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-url-host",
            help="A host videos may be downloaded from: HOST, HOST:PORT, *.DOMAIN (repeatable).",
        ),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest video accepted, in MiB.")] = 200.0,
    max_concurrency: Annotated[int, typer.Option(help="Predictor calls at once.")] = 1,
    max_batch: Annotated[
        int, typer.Option(help="Requests arriving together answered in one batch (1: no batching).")
    ] = 4,
    static_cache: Annotated[
        bool,
        typer.Option(help="Full model: a preallocated KV cache (compiled decoding on a GPU)."),
    ] = False,
    compile_model: CompileOpt = False,
    max_queue: Annotated[int, typer.Option(help="Requests that may wait; more get 429.")] = 8,
    timeout_s: Annotated[
        float, typer.Option(help="Queue wait + analysis time per request; then 504.")
    ] = 600.0,
    max_json_mb: Annotated[
        float, typer.Option(help="Largest JSON body (chat requests), in MiB; bigger videos: /v1/files.")
    ] = 4.0,
    max_connections: Annotated[int, typer.Option(help="Open connections at once; more get 503.")] = 256,
    max_body_reads: Annotated[
        int, typer.Option(help="Request bodies read at once; more wait up to 10 s, then 429.")
    ] = 8,
    head_timeout_s: Annotated[
        float, typer.Option(help="Seconds to send a request's head; then the connection is closed.")
    ] = 10.0,
    body_timeout_s: Annotated[
        float, typer.Option(help="Longest pause within a request body, in seconds; then 408.")
    ] = 30.0,
    body_min_rate_kib: Annotated[
        float,
        typer.Option(help="Slowest average pace of a body after its first --body-timeout-s, KiB/s (0: any)."),
    ] = 16.0,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="EMOTION_LLAMA_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/*."),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="Full model: who decodes, local (the model in this process) or vllm (vLLM decodes the "
            "prompts the model computes: --vllm-url or --vllm-model; labels generated, greedy; pip "
            "install 'emotion-llama\\[vllm]', a CUDA GPU).",
        ),
    ] = "local",
    vllm_url: VllmUrlOpt = None,
    vllm_model: VllmModelOpt = None,
    vllm_lora: VllmLoraOpt = None,
) -> None:
    """Serve the predictor over HTTP: OpenAI-compatible /v1/chat/completions (streaming too),
    /v1/analyze (JSON with the AU timeline and images), batch jobs, /health, /metrics and the web
    page at /. The model loads in the background (/v1 answers 503 until then). See docs/serving.md."""
    try:
        from emotion_llama.model.quantize import flag_of
        from emotion_llama.precision import check_dtype
        from emotion_llama.serve.app import ServeSettings, create_app, serve_forever
        from emotion_llama.serve.inputs import resolve_roots
        from emotion_llama.serve.predictor import Predictor

        check_dtype(llm_dtype)  # the model loads in the background: refuse bad options now
        check_dtype(dtype, "model")
        quantization = _quantization(load_in_8bit, load_in_4bit, fp8, model)
        _speech_options(language, asr_model)
        if compile_model and model is None:
            raise EmotionLlamaError("--compile compiles the full model: give a checkpoint (--model)")
        local_only = {"--static-cache": static_cache, "--compile": compile_model}
        if quantization:
            local_only[flag_of(quantization)] = True
        flags = [k for k, on in local_only.items() if on]
        vllm = _vllm_spec(engine, model, vllm_url, vllm_model, vllm_lora, flags)
        if model is not None:
            from emotion_llama.model.checkpoint import resolve_checkpoint

            model = resolve_checkpoint(model)

        settings = ServeSettings(
            allow_roots=resolve_roots(allow_root or []),
            allow_url_hosts=tuple(allow_url_host or ()),
            max_upload_mb=max_upload_mb,
            max_concurrency=max_concurrency,
            max_batch=max_batch,
            max_queue=max_queue,
            timeout_s=timeout_s,
            max_json_mb=max_json_mb,
            max_connections=max_connections,
            max_body_reads=max_body_reads,
            head_timeout_s=head_timeout_s,
            body_timeout_s=body_timeout_s,
            body_min_rate_kib=body_min_rate_kib,
            api_key=api_key or None,
        )
        app_ = create_app(
            lambda: Predictor(
                preset=preset,
                model_dir=model,
                llm=llm,
                device=device,
                static_cache=static_cache or compile_model,
                compile_scoring=compile_model,
                llm_dtype=llm_dtype,
                dtype=dtype,
                quantization=quantization,
                max_new_tokens=max_new_tokens,
                language=language,
                asr_model=asr_model,
                vllm=vllm,
            ),
            settings,
        )
    except ValueError as exc:  # a setting out of range
        _fail(str(exc))
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        err_console.print(f"[yellow]warning:[/] listening on {host} without an API key (--api-key)")
    console.print(f"serving on http://{host}:{port} (the model loads in the background; see /health)")
    serve_forever(app_, host=host, port=port)


def _quantization(load_in_8bit: bool, load_in_4bit: bool, fp8: bool, model: Path | None) -> str | None:
    """The quantization the flags ask for (``None``: none), refused now (the model loads in the
    background) without a checkpoint, or without bitsandbytes for its flags."""
    from emotion_llama.model.quantize import (
        BNB_QUANTIZATIONS,
        flag_of,
        quantization_flags,
        require_bitsandbytes,
    )

    quantization = quantization_flags(load_in_8bit, load_in_4bit, fp8)
    if quantization is not None:
        if model is None:
            raise EmotionLlamaError(
                f"{flag_of(quantization)} quantizes the LLM of --model: give a checkpoint"
            )
        if quantization in BNB_QUANTIZATIONS:
            require_bitsandbytes(quantization)
    return quantization


def _vllm_spec(
    engine: str,
    model: Path | None,
    url: str | None,
    name: str | None,
    lora: str | None,
    local_only: list[str],
) -> VllmSpec | None:
    """serve's --engine and --vllm-* options, checked before the model loads in the background."""
    from emotion_llama.model.vllm_engine import VllmSpec

    kind = engine.strip().lower()
    if kind not in ("local", "vllm"):
        raise EmotionLlamaError(f"--engine must be local or vllm, not {engine!r}")
    if kind == "local":
        if url or name or lora:
            raise EmotionLlamaError("--vllm-url, --vllm-model and --vllm-lora are for --engine vllm")
        return None
    if model is None:
        raise EmotionLlamaError("--engine vllm decodes the full model's prompts: give a checkpoint (--model)")
    if local_only:
        raise EmotionLlamaError(
            f"{local_only[0]} is for --engine local; vLLM runs its own decoding and weights"
        )
    spec = VllmSpec(url, name, lora)
    if not url:  # vLLM in this process: its options and package checked before the background load
        spec.before_load()
    return spec
