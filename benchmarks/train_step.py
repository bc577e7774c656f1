"""Training steps per second: "as the authors ran it" against the project's best settings, one run.

A step is what the training loop does per optimiser step: forward, loss on the answer tokens,
backward, AdamW update of the trainable parameters (LoRA + projections), with random weights and
samples of realistic, varying length (260 multimodal positions + a prompt + an answer; about
461 positions on average, as the anchor of issue 5). Rows, each changing one thing from the row
above, so every gain is attributed:

    authors      batch 1, fp16 autocast + grad scaler (fp32 on CPU), eager attention, ViT every step
    +sdpa        scaled-dot-product attention
    +bf16        bf16 autocast, no grad scaler
    +cached vit  the frozen ViT-g output read from the cache instead of run each step
    +batch B     B samples per step, batches of similar length (little padding)
    +fused adamw the fused AdamW kernel (CUDA only)
    +compile     each LLM decoder layer through torch.compile (train.compile), with --compile

Printed: samples/s, the speed-up over the authors' way and, on a GPU, the model FLOPs utilisation
(4 x LLM parameters x real tokens per sample for a frozen base with LoRA, plus 2 x ViT parameters
x ViT tokens when the ViT runs; peak from ``--peak-tflops`` or the known dense bf16 peak).

    python benchmarks/train_step.py                           # tiny preset on CPU
    python benchmarks/train_step.py --preset paper --device cuda --batches 8,16
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from timing import write_json

from emotion_llama.config import load_config
from emotion_llama.model.builder import build_model
from emotion_llama.train.engine import set_compiled_layers
from emotion_llama.train.schedule import param_groups

#: Dense bf16 tensor-core peaks (TFLOP/s) by device name fragment.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


@dataclass(frozen=True)
class Variant:
    name: str
    batch: int
    precision: str  # fp16 | bf16 | fp32
    attn: str
    cached_vit: bool
    fused_adamw: bool = False
    compiled: bool = False


def sample_lengths(n: int, prompt_mean: int, answer_mean: int, seed: int = 0) -> list[tuple[int, int]]:
    """(prompt, answer) token counts: prompts vary +-25%, answers +-75% (labels to long reasons)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        p = int(prompt_mean * (0.75 + 0.5 * torch.rand(1, generator=g).item()))
        a = int(answer_mean * (0.25 + 1.5 * torch.rand(1, generator=g).item()))
        out.append((max(p, 4), max(a, 1)))
    return out


def make_batch(config: Any, lengths: list[tuple[int, int]], vit_tokens: int, seed: int) -> dict[str, Any]:
    """A right-padded batch of the given (prompt, answer) lengths around the feature positions."""
    g = torch.Generator().manual_seed(seed)
    f = config.num_multimodal_tokens
    total = [f + p + a for p, a in lengths]
    length = max(total)
    b = len(lengths)
    vocab = config.llm.vocab_size
    ids = torch.randint(3, vocab, (b, length), generator=g)
    attn = torch.zeros(b, length, dtype=torch.long)
    feature_mask = torch.zeros(b, length, dtype=torch.bool)
    labels = torch.full((b, length), -100)
    for i, ((_p, a), t) in enumerate(zip(lengths, total, strict=True)):
        attn[i, :t] = 1
        feature_mask[i, 4 : 4 + f] = True
        labels[i, t - a : t] = ids[i, t - a : t]
    v, fe = config.vision, config.features
    return {
        "input_ids": ids,
        "attention_mask": attn,
        "feature_mask": feature_mask,
        "labels": labels,
        "pixel_values": torch.randn(b, 3, v.image_size, v.image_size, generator=g),
        "vision_tokens": torch.randn(b, vit_tokens, v.hidden_size, generator=g),
        "local_feats": torch.randn(b, fe.local_dim, generator=g),
        "temporal_feats": torch.randn(b, fe.temporal_dim, generator=g),
        "audio_feats": torch.randn(b, fe.audio_dim, generator=g),
        "real_tokens": sum(total),
    }


def build(config: Any, device: torch.device, precision: str, attn: str) -> Any:
    """Frozen weights in the compute dtype, trainable ones in fp32 (master weights), as mixed
    precision training keeps them."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    if device.type == "cpu":
        dtype = torch.float32  # CPU half-precision matmuls are emulated: keep the stored weights fp32
    model = build_model(config, device=device, dtype=dtype)
    model.llm.get_base_model().set_attn_implementation(attn)
    model.global_encoder.vit.set_attn_implementation(attn)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    model.train()
    model.global_encoder.eval()
    return model


def run_variant(
    model: Any, config: Any, v: Variant, device: torch.device, steps: int, vit_tokens: int, lengths: list
) -> dict[str, Any]:
    groups = param_groups(model.named_parameters(), 0.05)
    kwargs: dict[str, Any] = {"lr": 1e-5}
    if v.fused_adamw:
        kwargs["fused"] = True
    opt = torch.optim.AdamW(groups, **kwargs)
    amp = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(v.precision)
    if device.type == "cpu":
        amp = None  # fp32 on CPU (see main)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    # Batches of similar length: sort the pool by length, cut into batches (the "+batch" rows).
    pool = sorted(lengths, key=sum) if v.batch > 1 else lengths
    batches = [pool[i : i + v.batch] for i in range(0, len(pool) - v.batch + 1, v.batch)]
    prepared = []
    for k in range(steps + 2):
        raw = make_batch(config, batches[k % len(batches)], vit_tokens, seed=k)
        real = raw.pop("real_tokens")
        if v.cached_vit:
            raw.pop("pixel_values")
        else:
            raw.pop("vision_tokens")
        prepared.append(({n: t.to(device) for n, t in raw.items()}, real))

    def step(batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = model(**batch).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    if v.compiled:
        set_compiled_layers(model, True)
    for batch, _ in prepared[:2]:  # warm-up (and, compiled, the compilation)
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    tokens = 0
    for batch, real in prepared[2:]:
        step(batch)
        tokens += real
    if device.type == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    samples = steps * v.batch
    if v.compiled:
        set_compiled_layers(model, False)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"variant": v.name, "samples_per_s": samples / sec, "tokens": tokens, "sec": sec, "peak_gib": peak}


def flops_per_sample(model: Any, tokens_per_sample: float, vit_runs: bool, vit_tokens: int) -> float:
    llm = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" not in n)
    vit = sum(p.numel() for p in model.global_encoder.parameters())
    return 4.0 * llm * tokens_per_sample + (2.0 * vit * vit_tokens if vit_runs else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="8", help="batch sizes of the '+batch' rows, e.g. 8,16")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per row")
    ap.add_argument("--compile", action="store_true", help="add the +compile row (compile time untimed)")
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--answer-tokens", type=int, default=100)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = load_config(args.preset)
    config = replace(
        config, llm=replace(config.llm, name_or_path=None), vision=replace(config.vision, weights=None)
    )
    vit_tokens = 1 + (config.vision.image_size // config.vision.patch_size) ** 2
    batches = [int(x) for x in args.batches.split(",")]
    lengths = sample_lengths(max(batches) * (args.steps + 2) * 2, args.prompt_tokens, args.answer_tokens)
    gpu = device.type == "cuda"
    # On CPU there is no fp16 training and bf16 autocast is slower than fp32 (no bf16 units on
    # most CPUs): both ends run in fp32 there and the bf16 row is left out.
    low = "bf16" if gpu else "fp32"
    variants = [
        Variant(
            "authors (b1 fp16 eager vit)" if gpu else "authors (b1 fp32 eager vit)", 1, "fp16", "eager", False
        ),
        Variant("+sdpa", 1, "fp16", "sdpa", False),
    ]
    if gpu:
        variants.append(Variant("+bf16", 1, "bf16", "sdpa", False))
    variants.append(Variant("+cached vit", 1, low, "sdpa", True))
    variants += [Variant(f"+batch {b}", b, low, "sdpa", True) for b in batches]
    if gpu:
        variants.append(Variant(f"+fused adamw (b{batches[-1]})", batches[-1], "bf16", "sdpa", True, True))
    if args.compile:
        variants.append(Variant(f"+compile (b{batches[-1]})", batches[-1], low, "sdpa", True, gpu, True))
    name = torch.cuda.get_device_name() if gpu else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    rows = []
    model, built = None, None
    for v in variants:
        key = (v.precision if gpu else "fp32", v.attn)
        if key != built:
            del model
            if gpu:
                torch.cuda.empty_cache()
            model, built = build(config, device, v.precision, v.attn), key
        r = run_variant(model, config, v, device, args.steps, vit_tokens, lengths)
        per_sample = r["tokens"] / (args.steps * v.batch)
        flops = flops_per_sample(model, per_sample, not v.cached_vit, vit_tokens)
        r["tokens_per_sample"] = per_sample
        r["mfu"] = (r["samples_per_s"] * flops / (peak * 1e12)) if (gpu and peak) else None
        rows.append(r)
        write_json(args.json, {"device": name, "preset": args.preset, "rows": rows, "partial": True})
    base = rows[0]["samples_per_s"]
    print(
        f"device: {name}, preset {args.preset}, {args.steps} steps per row, "
        f"~{rows[0]['tokens_per_sample']:.0f} real positions per sample"
        + (f", peak {peak:g} TFLOP/s" if peak and gpu else "")
    )
    print(f"{'variant':<28}{'samples/s':>11}{'vs authors':>12}{'MFU':>8}{'peak GiB':>10}")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(
            f"{r['variant']:<28}{r['samples_per_s']:>11.2f}{r['samples_per_s'] / base:>11.2f}x{mfu:>8}"
            f"{r['peak_gib']:>10.2f}"
        )
    write_json(args.json, {"device": name, "preset": args.preset, "rows": rows, "partial": False})


if __name__ == "__main__":
    main()
