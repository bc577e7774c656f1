"""--engine vllm against the Hugging Face path: labels/s and reasoning tokens/s of the same model
on the same prompts, and how many answers are the same.

In one run, for one model (a checkpoint, or random weights of a preset) and each batch size:

* the emotion prompt (``--label-tokens`` new tokens at most) and the reasoning prompt (one fixed
  instruction, ``--reason-tokens`` at most), answered greedily by the model's own ``generate``
  (:class:`~emotion_llama.model.generation.Generator`, the baseline) and by vLLM from the same
  prompt embeddings (:class:`~emotion_llama.model.vllm_engine.VllmGenerator`);
* clips/s, answer tokens/s (the answers' text re-tokenized, the same count for both engines),
  the ratio to the baseline and the number of identical answers.

Where vLLM runs:

    python benchmarks/vllm_engine.py --preset paper --device cuda --vllm-inprocess
        # the model's LLM exported merged to a temporary folder, vllm.LLM on it in this process
    python benchmarks/vllm_engine.py --checkpoint ckpt/ --device cuda --vllm-url http://127.0.0.1:8100
        # a running `vllm serve MERGED/llm --enable-prompt-embeds` of the same checkpoint
    python benchmarks/vllm_engine.py --reference
        # CPU, tiny preset: tests/vllm_reference.py (Hugging Face decoding behind vLLM's protocol)
        # stands in for vLLM; checks the plumbing, its speed says nothing about vLLM

Every timing is the median of ``--repeats`` calls after ``--warmup`` and includes building the
prompts (with ``--cached-vision``, without the ViT) and decoding the text.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from serve_model import setup
from timing import median_seconds

from emotion_llama.model.generation import ClipInput, Generator
from emotion_llama.model.vllm_engine import VllmGenerator, VllmOffline, VllmServer, dtype_name
from emotion_llama.precision import torch_dtype

ROOT = Path(__file__).resolve().parents[1]
ASK = "Explain the emotion of the person, from the face, the voice and the words."


def backend_for(args: argparse.Namespace, model: Any, processor: Any, tmp: Path) -> tuple[Any, Any]:
    """The vLLM engine the options name, and what to close after the run."""
    if args.vllm_url:
        return VllmServer(args.vllm_url, args.vllm_model), None
    if args.reference:
        sys.path.insert(0, str(ROOT / "tests"))
        from vllm_reference import Reference, serve

        srv, url = serve(Reference(model.llm, processor.tokenizer))
        return VllmServer(url), srv
    from emotion_llama.model.checkpoint import export_merged, save_pretrained

    ckpt = Path(args.checkpoint) if args.checkpoint else save_pretrained(model, tmp / "ckpt")
    merged = export_merged(ckpt, tmp / "merged")
    dtype = dtype_name(model.llama_proj.weight.dtype)
    return VllmOffline(merged / "llm", dtype=dtype, gpu_memory_utilization=args.gpu_memory_share), None


def rows_for(
    task: str, batch: int, clips: list[ClipInput], engines: dict[str, Any], tokenizer: Any, args: Any
) -> list[dict[str, Any]]:
    chunk = (clips * (batch // len(clips) + 1))[:batch]
    answers = {name: gen(chunk) for name, gen in engines.items()}
    device = torch.device(args.device)
    rows = []
    for name, gen in engines.items():
        seconds = median_seconds(lambda g=gen: g(chunk), device, args.repeats, args.warmup)
        tokens = sum(len(tokenizer.encode(a, add_special_tokens=False)) for a in answers[name])
        same = sum(a == b for a, b in zip(answers[name], answers["hf"], strict=True))
        rate = {"clips_per_s": batch / seconds, "tokens_per_s": tokens / seconds}
        rows.append({"task": task, "batch": batch, "engine": name, "s": seconds, **rate, "same": same})
    base = rows[0]["clips_per_s"]
    for r in rows:
        r["vs_hf"] = r["clips_per_s"] / base
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="a checkpoint folder (default: random weights)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on the CPU")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--vllm-url", default=None, help="a running vllm serve ... --enable-prompt-embeds")
    where.add_argument("--vllm-inprocess", action="store_true", help="vllm.LLM on the merged export")
    where.add_argument(
        "--reference", action="store_true", help="CPU plumbing check (tests/vllm_reference.py)"
    )
    ap.add_argument("--vllm-model", default=None, help="with --vllm-url: the served model's name")
    ap.add_argument("--gpu-memory-share", type=float, default=0.6, help="--vllm-inprocess: vLLM's share")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--label-tokens", type=int, default=16)
    ap.add_argument("--reason-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--dataset-size", type=int, default=40)
    ap.add_argument("--cached-vision", action="store_true", help="the ViT run once beforehand")
    ap.add_argument("--tokenizer", default=None)
    args = ap.parse_args()
    # what serve_model.setup reads
    args.train_steps, args.quantization, args.attention = 0, None, "sdpa"
    device = torch.device(args.device)
    dtype = torch_dtype(args.dtype, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        model, processor, clips, note = setup(args, device, dtype, Path(tmp) / "data")
        backend, closer = backend_for(args, model, processor, Path(tmp))
        print(f"model: {args.checkpoint or args.preset} ({note}), {dtype}, {device}; vLLM: {backend.name}")
        rows: list[dict[str, Any]] = []
        try:
            prompts = (
                ("label", "emotion", None, args.label_tokens),
                ("reason", "reason", ASK, args.reason_tokens),
            )
            for task, kind, instruction, tokens in prompts:
                ask: dict[str, Any] = {"task": kind, "instruction": instruction, "max_new_tokens": tokens}
                engines = {
                    "hf": Generator(model, processor, **ask),
                    "vllm": VllmGenerator(model, processor, backend, **ask),
                }
                for batch in (int(b) for b in args.batches.split(",")):
                    rows += rows_for(task, batch, clips, engines, processor.tokenizer, args)
        finally:
            if closer is not None:
                closer.shutdown()
    print("\n| task | batch | engine | s | clips/s | tokens/s | vs HF | same answers |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['batch']} | {r['engine']} | {r['s']:.3f} | {r['clips_per_s']:.2f} | "
              f"{r['tokens_per_s']:.1f} | {r['vs_hf']:.2f}x | {r['same']}/{r['batch']} |")  # fmt: skip
    if args.reference:
        print(
            "\n(--reference: Hugging Face decoding behind vLLM's protocol; its speed says nothing about vLLM)"
        )


if __name__ == "__main__":
    main()
