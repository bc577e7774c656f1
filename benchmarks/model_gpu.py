"""One forward+backward of the model at batch 1 and 8, bf16, random weights.

Each sample is 260 multimodal tokens + 64 prompt tokens + 64 answer tokens (388 positions), the
global encoder runs on a 448x448 frame, the loss covers the answer tokens. Printed per batch
size: step time, samples/s and peak GPU memory, for the project's default (SDPA attention) and,
as the baseline in the same run, eager attention (what the authors' transformers version ran).

    python benchmarks/model_gpu.py                # paper preset, needs a GPU (~20 GB at batch 8)
    python benchmarks/model_gpu.py --preset tiny  # runs anywhere, checks the script
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from emotion_llama.config import load_config
from emotion_llama.model.builder import build_model

PROMPT_TOKENS = 64
ANSWER_TOKENS = 64


def make_batch(config, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)
    f = config.num_multimodal_tokens
    length = f + PROMPT_TOKENS + ANSWER_TOKENS
    vocab = config.llm.vocab_size
    ids = torch.randint(3, vocab, (batch, length), generator=g)
    feature_mask = torch.zeros(batch, length, dtype=torch.bool)
    feature_mask[:, 8 : 8 + f] = True  # a few prompt tokens, the features, then the rest
    labels = torch.full((batch, length), -100)
    labels[:, -ANSWER_TOKENS:] = ids[:, -ANSWER_TOKENS:]
    v, fe = config.vision, config.features
    out = {
        "input_ids": ids,
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
        "feature_mask": feature_mask,
        "labels": labels,
        "pixel_values": torch.randn(batch, 3, v.image_size, v.image_size, generator=g),
        "local_feats": torch.randn(batch, fe.local_dim, generator=g),
        "temporal_feats": torch.randn(batch, fe.temporal_dim, generator=g),
        "audio_feats": torch.randn(batch, fe.audio_dim, generator=g),
    }
    return {k: t.to(device) for k, t in out.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_time(model, batch, device, repeats: int) -> tuple[float, float]:
    """Median seconds per forward+backward, and peak memory in GiB."""
    params = [p for p in model.parameters() if p.requires_grad]
    for _ in range(2):  # warm-up
        model(**batch).loss.backward()
        for p in params:
            p.grad = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        model(**batch).loss.backward()
        sync(device)
        times.append(time.perf_counter() - t0)
        for p in params:
            p.grad = None
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return sorted(times)[len(times) // 2], peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    base = load_config(args.preset)
    # Random weights: no base model or EVA file is read.
    base = replace(base, llm=replace(base.llm, name_or_path=None), vision=replace(base.vision, weights=None))
    rows = []
    for attn in ("eager", "sdpa"):
        t0 = time.perf_counter()
        model = build_model(base, device=device, dtype=dtype)
        model.llm.get_base_model().set_attn_implementation(attn)
        model.global_encoder.vit.set_attn_implementation(attn)
        model.train()
        build_s = time.perf_counter() - t0
        for b in (int(x) for x in args.batches.split(",")):
            batch = make_batch(base, b, device)
            sec, peak = step_time(model, batch, device, args.repeats)
            rows.append(
                {
                    "attention": attn,
                    "batch": b,
                    "step_s": sec,
                    "samples_per_s": b / sec,
                    "peak_gib": peak,
                    "build_s": build_s,
                }
            )
            del batch
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(
        f"device: {name}, dtype {dtype}, preset {args.preset}, "
        f"{base.num_multimodal_tokens}+{PROMPT_TOKENS}+{ANSWER_TOKENS} tokens per sample"
    )
    print(f"{'attention':<10}{'batch':>6}{'step ms':>10}{'samples/s':>11}{'peak GiB':>10}{'vs eager':>10}")
    for r in rows:
        ref = next(x for x in rows if x["attention"] == "eager" and x["batch"] == r["batch"])
        print(
            f"{r['attention']:<10}{r['batch']:>6}{r['step_s'] * 1e3:>10.1f}{r['samples_per_s']:>11.2f}"
            f"{r['peak_gib']:>10.2f}{ref['step_s'] / r['step_s']:>9.2f}x"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": name, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
