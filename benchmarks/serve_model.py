"""Serving speed: emotion labels by scoring vs by greedy generation, and reasoning tokens/s.

In one run, for one model:

* label predictions/s at each batch size, by :class:`~emotion_llama.model.scoring.LabelScorer`
  (one forward over the prompt) and by greedy generation of ``--label-tokens`` new tokens parsed
  with ``parse_label_robust`` (the baseline: what evaluation does);
* how often the two give the same label, over the held-out clips of a synthetic dataset;
* reasoning tokens/s of greedy generation (task ``reason``) at each batch size, with exactly
  ``--reason-tokens`` new tokens per clip (``min_new_tokens`` = ``max_new_tokens``, so the count
  does not depend on where a random model stops).

The clips come from the synthetic dataset (``emotion_llama.data.synth``) written to a temporary
folder. Every timing is the median of ``--repeats`` calls after ``--warmup`` calls and includes
everything after the clips are in memory: prompt building, the ViT (unless ``--cached-vision``),
the LLM, decoding the text.

    python benchmarks/serve_model.py                           # tiny preset, CPU, random weights
    python benchmarks/serve_model.py --train-steps 1500        # tiny, trained first (agreement is meaningful)
    python benchmarks/serve_model.py --preset paper --device cuda [--static-cache] [--compile]

The paper preset is built with random weights (bf16 on CUDA, SDPA attention), as in
``benchmarks/model_gpu.py``; its agreement figure only says whether both paths pick the same
label from the same (meaningless) distribution. ``--static-cache`` generates with transformers'
``cache_implementation="static"``; ``--compile`` compiles generation's decoding step (transformers'
automatic compilation, which needs the static cache, so it implies it) and runs the scorer's
forwards through ``torch.compile(dynamic=True)``.

``--fp8`` then converts the same model to FP8 matmuls (:mod:`emotion_llama.model.fp8`: LoRA merged,
e4m3 weights and activations, per-row scales) and times label scoring and reasoning again, with
the same options: the rows ``scoring, fp8`` and ``generate ..., fp8`` against the plain ones of the
same run, and how many labels FP8 scoring keeps (``fp8_agreement``). On a GPU it needs compute
capability 8.9+ and bfloat16; on the CPU ``torch._scaled_mm`` has no FP8 units and is slower.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from timing import median_seconds, write_json

from emotion_llama.config import EmotionLlamaConfig, load_config
from emotion_llama.data.synth import make_synthetic_dataset
from emotion_llama.errors import ConfigError
from emotion_llama.media.frames import read_frame
from emotion_llama.model.builder import build_model
from emotion_llama.model.generation import ClipInput, build_inputs
from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.model.processor import EmotionLlamaProcessor
from emotion_llama.model.scoring import LabelScorer
from emotion_llama.model.tokenizer import load_tokenizer, toy_tokenizer
from emotion_llama.prompts import LABELS, REASON_INSTRUCTIONS, clean_generation, parse_label_robust
from emotion_llama.train.data import TrainDataset, read_training_folder


def tokenizer_for(config: EmotionLlamaConfig, override: str | None) -> tuple[Any, str]:
    """The config's tokenizer, or the toy one when it cannot be had offline (random weights
    make the ids meaningless anyway; the prompt lengths are then only approximate)."""
    if override == "toy":
        return toy_tokenizer(512), "toy"
    cfg = replace(config, llm=replace(config.llm, tokenizer=override)) if override else config
    try:
        return load_tokenizer(cfg), str(cfg.llm.tokenizer or cfg.llm.name_or_path)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"note: {str(exc).split('.')[0]}; using the toy tokenizer (prompt lengths approximate)")
        return toy_tokenizer(512), "toy (fallback)"


def setup(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, folder: Path) -> tuple[
    EmotionLlama, EmotionLlamaProcessor, list[ClipInput], str
]:  # fmt: skip
    if args.checkpoint:
        from emotion_llama.model.checkpoint import load_pretrained

        model = load_pretrained(args.checkpoint, device=device, dtype=dtype, quantization=args.quantization)
        config = model.config
        tokenizer, tok_name = tokenizer_for(config, args.tokenizer)
        note = f"checkpoint {args.checkpoint}"
    else:
        base = load_config(args.preset)
        tok_source = args.tokenizer or base.llm.tokenizer or base.llm.name_or_path
        # Random weights: no base model or EVA file is read.
        config = replace(
            base,
            llm=replace(base.llm, name_or_path=None, tokenizer=tok_source),
            vision=replace(base.vision, weights=None),
        )
        if args.train_steps:
            # A model trained from scratch knows only the layout it was trained with.
            config = replace(config, prompt=replace(config.prompt, layout="training"))
        tokenizer, tok_name = tokenizer_for(config, None)
        model = None
        note = "random weights"
    processor = EmotionLlamaProcessor(tokenizer, config)
    make_synthetic_dataset(folder, n=args.dataset_size, config=config, seed=0, layout="native")
    if model is None:
        model = build_model(config, device=device, dtype=dtype, quantization=args.quantization)
        if args.train_steps:
            model = train_tiny(model, processor, folder, args.train_steps, device)
            note = f"trained {args.train_steps} steps on the synthetic set"
    for part in (model.llm.get_base_model(), model.global_encoder.vit):
        if hasattr(part, "set_attn_implementation"):
            part.set_attn_implementation(args.attention)
    model.eval()
    held_out = [
        s
        for split in ("val", "test")
        for s in read_training_folder(folder, config, split=split, tasks=("emotion",))
    ]
    clips = [ClipInput(s.subtitle, read_frame(Path(str(s.frame))), s.features) for s in held_out]
    if args.cached_vision:
        clips = cache_vision(model, processor, clips, device)
    return model, processor, clips, f"{note}, tokenizer {tok_name}"


def train_tiny(
    model: EmotionLlama, processor: EmotionLlamaProcessor, folder: Path, steps: int, device: torch.device
) -> EmotionLlama:
    from emotion_llama.train.loop import TrainConfig, train
    from emotion_llama.train.schedule import Schedule

    cfg = model.config
    train_set = TrainDataset(read_training_folder(folder, cfg, split="train"), processor, seed=0)
    tc = TrainConfig(
        schedule=Schedule("warmup_cosine", 3e-2, 3e-3, 3e-3, max(1, steps // 10), steps, None),
        epochs=1, iters_per_epoch=steps, batch_size=4, seed=0, out_dir=folder / "run",
        log_every=max(1, steps // 3), device=str(device),
    )  # fmt: skip
    t0 = time.perf_counter()
    train(model, processor, train_set, tc)
    print(f"trained {steps} steps in {time.perf_counter() - t0:.1f}s")
    return model


def cache_vision(
    model: EmotionLlama, processor: EmotionLlamaProcessor, clips: list[ClipInput], device: torch.device
) -> list[ClipInput]:
    """The clips with their ViT outputs precomputed (and no frame)."""
    out = []
    with torch.no_grad():
        for c in clips:
            pixels = processor.preprocess_image(c.frame)[None].to(device)
            vt = model.global_encoder(pixels)[0]
            out.append(ClipInput(c.subtitle, None, c.features, vision_tokens=vt))
    return out


class GreedyRunner:
    """Generator's steps (build inputs, generate, decode, clean) with the benchmark's cache and
    compile options; for the reasoning rows, a fixed number of new tokens."""

    def __init__(
        self,
        model: EmotionLlama,
        processor: EmotionLlamaProcessor,
        device: torch.device,
        *,
        task: str,
        instruction: str | None,
        new_tokens: int,
        fixed_length: bool,
        static_cache: bool,
        compile_decode: bool,
    ) -> None:
        self.model, self.processor, self.device = model, processor, device
        self.task, self.instruction = task, instruction
        self.kwargs: dict[str, Any] = {"max_new_tokens": new_tokens, "do_sample": False}
        if fixed_length:
            self.kwargs["min_new_tokens"] = new_tokens
        if static_cache:
            self.kwargs["cache_implementation"] = "static"
            if compile_decode:
                from transformers import CompileConfig

                cc = CompileConfig()
                if device.type != "cuda":
                    # transformers compiles automatically on accelerators only; this flag (its
                    # own, for tests) makes the CPU run take the same path.
                    cc._compile_all_devices = True
                self.kwargs["compile_config"] = cc
            else:
                self.kwargs["disable_compile"] = True  # a static cache alone, uncompiled

    def ids(self, clips: list[ClipInput]) -> torch.Tensor:
        inputs = build_inputs(
            self.processor, clips, task=self.task, instruction=self.instruction, device=self.device
        )
        return self.model.generate(**inputs, **self.kwargs)

    def texts(self, clips: list[ClipInput]) -> list[str]:
        ids = self.ids(clips)
        return [
            clean_generation(t) for t in self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        ]


def fp8_rows(
    model: EmotionLlama,
    proc: EmotionLlamaProcessor,
    clips: list[ClipInput],
    reason: GreedyRunner,
    scored: list[str],
    *,
    batches: list[int],
    device: torch.device,
    repeats: int,
    warmup: int,
    compile_scoring: bool,
) -> tuple[list[dict[str, Any]], int]:
    """The model converted to FP8 in place, then label scoring and reasoning timed again: the rows
    and how many of ``scored`` (the plain model's labels, in batches of the largest size) FP8 keeps."""
    from emotion_llama.model.fp8 import to_fp8

    to_fp8(model)
    scorer = LabelScorer(model, proc, LABELS)
    if compile_scoring:
        scorer.compile()
    step = max(batches)
    labels = [r.label for i in range(0, len(clips), step) for r in scorer(clips[i : i + step])]
    kept = sum(a == b for a, b in zip(scored, labels, strict=True))
    rows: list[dict[str, Any]] = []
    for b in batches:
        pool = (clips * (b // len(clips) + 1))[:b]
        sec = median_seconds(lambda p=pool: scorer(p), device, repeats, warmup)
        rows.append({"task": "label", "method": "scoring, fp8", "batch": b, "s": sec, "rate": b / sec})
    for b in batches:
        pool = (clips * (b // len(clips) + 1))[:b]
        n_new = reason.ids(pool).shape[1]
        sec = median_seconds(lambda p=pool: reason.ids(p), device, repeats, warmup)
        rows.append({"task": "reason", "method": f"generate {n_new} tok, fp8", "batch": b, "s": sec,
                     "rate": b * n_new / sec})  # fmt: skip
    return rows, kept


def _peak_gib(device: torch.device) -> float | None:
    """The most GPU memory allocated so far, GiB (``None`` off CUDA)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _peak(device: torch.device) -> str:
    gib = _peak_gib(device)
    return "-" if gib is None else f"{gib:.1f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                    help="auto: bfloat16 on CUDA, float32 elsewhere")  # fmt: skip
    ap.add_argument("--attention", default="sdpa", help="the LLM's attention implementation")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--warmup", type=int, default=None, help="warm-up calls per timing (default 2, 6 with --compile)"
    )
    ap.add_argument("--label-tokens", type=int, default=4, help="new tokens of the greedy label baseline")
    ap.add_argument("--reason-tokens", type=int, default=None, help="default: 64 on CUDA, 16 elsewhere")
    ap.add_argument("--static-cache", action="store_true", help='generate with cache_implementation="static"')
    ap.add_argument(
        "--compile", action="store_true", help="torch.compile decoding (implies --static-cache) and scoring"
    )
    ap.add_argument("--cached-vision", action="store_true", help="give the ViT output instead of frames")
    ap.add_argument("--train-steps", type=int, default=0, help="train the model on the synthetic set first")
    ap.add_argument("--dataset-size", type=int, default=120, help="synthetic clips (30%% are held out)")
    ap.add_argument("--checkpoint", help="a trained checkpoint folder instead of --preset")
    ap.add_argument("--tokenizer", help="tokenizer folder or hub id ('toy' for the built-in one)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument(
        "--quantization", choices=("8bit", "4bit"), default=None, help="the LLM's weights in bitsandbytes"
    )
    ap.add_argument(
        "--fp8", action="store_true", help="then time scoring and reasoning again with FP8 matmuls"
    )
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    device = torch.device(args.device)
    if args.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    reason_tokens = args.reason_tokens or (64 if device.type == "cuda" else 16)
    static = args.static_cache or args.compile
    batches = [int(x) for x in args.batches.split(",")]
    # Compiled calls settle after a few calls (autotuning, CUDA graph recording).
    warmup = args.warmup if args.warmup is not None else (6 if args.compile else 2)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model, proc, clips, note = setup(args, device, dtype, Path(tmp) / "data")
        build_s = time.perf_counter() - t0
    scorer = LabelScorer(model, proc, LABELS)
    if args.compile:
        scorer.compile()
    common = {"static_cache": static, "compile_decode": args.compile}
    greedy = GreedyRunner(model, proc, device, task="emotion", instruction=None,
                          new_tokens=args.label_tokens, fixed_length=False, **common)  # fmt: skip
    reason = GreedyRunner(model, proc, device, task="reason", instruction=REASON_INSTRUCTIONS[0],
                          new_tokens=reason_tokens, fixed_length=True, **common)  # fmt: skip

    # Agreement over every held-out clip, in batches of the largest size.
    step = max(batches)
    scored, parsed = [], []
    for i in range(0, len(clips), step):
        part = clips[i : i + step]
        scored += [r.label for r in scorer(part)]
        parsed += [parse_label_robust(t, LABELS) for t in greedy.texts(part)]
    agree = sum(a == b for a, b in zip(scored, parsed, strict=True))
    named = sum(p is not None for p in parsed)

    rows: list[dict[str, Any]] = []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    cache = "static" if static else "dynamic"
    fp8_kept: int | None = None

    def payload(partial: bool) -> dict[str, Any]:
        return {"device": name, "dtype": str(dtype), "preset": model.config.name, "note": note,
                "cache": cache, "compile": args.compile, "rows": rows, "agreement": agree / len(clips),
                "clips": len(clips), "greedy_named_label": named, "quantization": args.quantization,
                "peak_gib": _peak_gib(device), "partial": partial,
                "fp8_agreement": None if fp8_kept is None else fp8_kept / len(clips)}  # fmt: skip

    for b in batches:
        pool = (clips * (b // len(clips) + 1))[:b]
        sec = median_seconds(lambda p=pool: greedy.texts(p), device, args.repeats, warmup)
        rows.append(
            {
                "task": "label",
                "method": f"greedy {args.label_tokens} tok",
                "batch": b,
                "s": sec,
                "rate": b / sec,
            }
        )
        sec = median_seconds(lambda p=pool: scorer(p), device, args.repeats, warmup)
        rows.append({"task": "label", "method": "scoring", "batch": b, "s": sec, "rate": b / sec})
        write_json(args.json, payload(True))
    for b in batches:
        pool = (clips * (b // len(clips) + 1))[:b]
        n_new = reason.ids(pool).shape[1]  # (also a warm-up call)
        if n_new != reason_tokens:
            raise SystemExit(f"generation made {n_new} tokens, not the {reason_tokens} asked for")
        sec = median_seconds(lambda p=pool: reason.ids(p), device, args.repeats, warmup)
        rows.append({"task": "reason", "method": f"generate {reason_tokens} tok", "batch": b, "s": sec,
                     "rate": b * reason_tokens / sec})  # fmt: skip
        write_json(args.json, payload(True))

    if args.fp8:
        more, fp8_kept = fp8_rows(
            model, proc, clips, reason, scored, batches=batches, device=device,
            repeats=args.repeats, warmup=warmup, compile_scoring=args.compile,
        )  # fmt: skip
        rows += more
    print(
        f"device: {name}, dtype {str(dtype).removeprefix('torch.')}, preset {model.config.name} ({note}), "
        f"attention {args.attention}, cache {cache}, compile {'on' if args.compile else 'off'}, "
        f"vision {'cached ViT output' if args.cached_vision else 'frames'}, "
        f"LLM weights {args.quantization or 'unquantized'}, peak {_peak(device)}, "
        f"threads {torch.get_num_threads()}, "
        f"set-up {build_s:.1f}s"
    )
    print(
        f"{'task':<8}{'method':<22}{'batch':>6}{'ms/call':>11}{'rate':>12}  {'unit':<10}{'vs baseline':>12}"
    )
    for r in rows:
        fp8 = r["method"].endswith(", fp8")  # against the plain row of its method and batch size
        if r["task"] == "label":
            want = "scoring" if fp8 else None
            ref = next(x for x in rows if x["task"] == "label" and x["batch"] == r["batch"]
                       and (want is None or x["method"] == want))  # fmt: skip
            unit, ratio = "labels/s", f"{r['rate'] / ref['rate']:.2f}x"
        else:
            ref = next(x for x in rows if x["task"] == "reason" and (not fp8 or x["batch"] == r["batch"]))
            unit, ratio = "tokens/s", f"{r['rate'] / ref['rate']:.2f}x"
        print(
            f"{r['task']:<8}{r['method']:<22}{r['batch']:>6}{r['s'] * 1e3:>11.2f}{r['rate']:>12.1f}  "
            f"{unit:<10}{ratio:>12}"
        )
    print(
        "baseline: labels vs greedy at the same batch size, reasoning vs batch "
        f"{batches[0]}; the fp8 rows vs the plain row of their method and batch size"
    )
    if fp8_kept is not None:
        print(f"FP8 scoring kept {fp8_kept}/{len(clips)} of the plain model's labels")
    print(
        f"label agreement, scoring vs parse_label_robust(greedy): {agree}/{len(clips)} = "
        f"{agree / len(clips):.3f} (greedy named a label for {named}/{len(clips)} clips)"
    )
    write_json(args.json, payload(False))


if __name__ == "__main__":
    main()
