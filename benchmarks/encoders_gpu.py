"""Clips per second through the four Emotion-LLaMA encoders, paper sizes, random weights.

Per clip: the global EVA ViT-g/14 on one 448x448 frame (1025 tokens), the local MAE ViT-L/16 on
16 face crops of 224 px (16 x 197 tokens), the temporal VideoMAE ViT-L/16 on 16 frames (1568
tokens), the audio HuBERT-large on 10 s of 16 kHz audio (499 frames). Decoding, face detection and
preprocessing are not timed; inputs are already normalised tensors on the device.

Rows, all measured in the same run:

* baseline: fp32, eager attention, one clip at a time, the encoders one after the other;
* bf16 + SDPA, one clip at a time (the plain "transformers classes" way);
* bf16 + SDPA, N clips per batch (the project's way), for each N in ``--batches``;
* the best batch again with the four encoders on four CUDA streams;
* the best batch with the linear layers of all four in FP8 (e4m3, per-row scales,
  ``emotion_llama.model.fp8``), on copies of the models, with each encoder's least output cosine
  to the plain one (an FP8 speed-up only counts if the features hold; layers whose sizes are not
  multiples of 16 stay as they are, which leaves the tiny MAE and VideoMAE unconverted);
* the best batch with every transformer block compiled (``compile_blocks``: regional
  ``torch.compile``, one block's compile per model), with and without streams.

Each row prints as soon as it is measured (a run cut short keeps what it printed); rows that
would start after ``--budget-s`` seconds are skipped. Per-encoder columns are ms per clip, each
encoder timed alone (median of ``--repeats`` after warm-up); clips/s is batch / their sum, except
for the streams rows, which time the four together.

    PYTHONPATH=src python benchmarks/encoders_gpu.py               # GPU, ~2-4 min with compilation
    PYTHONPATH=src python benchmarks/encoders_gpu.py --no-compile  # GPU, about a minute
    PYTHONPATH=src python benchmarks/encoders_gpu.py --tiny        # CPU, tiny configs, < 10 s

Models are random-initialised directly on the GPU; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from timing import median_seconds, sync, write_json
from torch import nn
from transformers import HubertModel, VideoMAEModel, ViTMAEModel

from emotion_llama.config import EmotionLlamaConfig, paper_config, tiny_config
from emotion_llama.encoders.models import (
    AudioEncoder,
    LocalEncoder,
    TemporalEncoder,
    compile_blocks,
    large_hubert_config,
    large_mae_config,
    large_videomae_config,
    tiny_hubert_config,
    tiny_mae_config,
    tiny_videomae_config,
)
from emotion_llama.model.modeling import GlobalEncoder

NAMES = ("global", "local", "temporal", "audio")


@dataclass
class Row:
    variant: str
    batch: int
    ms_per_clip: dict[str, float] = field(default_factory=dict)
    clips_per_s: float = 0.0
    note: str = ""


def build(cfg: EmotionLlamaConfig, tiny: bool, device: torch.device) -> dict[str, nn.Module]:
    """The four encoders with random weights, initialised directly on ``device`` (a ViT-g
    initialised on the host and copied over takes far longer)."""
    f, p = cfg.features, cfg.perception
    torch.manual_seed(0)
    with device:
        mods: dict[str, nn.Module] = {"global": GlobalEncoder(cfg.vision)}
        if tiny:
            mods["local"] = LocalEncoder(ViTMAEModel(tiny_mae_config(f.local_dim, p.face_size)))
            vcfg = tiny_videomae_config(f.temporal_dim, p.face_size, p.temporal_frames)
            mods["temporal"] = TemporalEncoder(VideoMAEModel(vcfg))
            mods["audio"] = AudioEncoder(HubertModel(tiny_hubert_config(f.audio_dim)), do_normalize=True)
        else:
            mods["local"] = LocalEncoder(ViTMAEModel(large_mae_config(p.face_size)))
            vcfg = large_videomae_config(p.face_size, p.temporal_frames)
            mods["temporal"] = TemporalEncoder(VideoMAEModel(vcfg))
            mods["audio"] = AudioEncoder(HubertModel(large_hubert_config()), do_normalize=True)
    for m in mods.values():
        m.requires_grad_(False).eval()
    return mods


def hf_models(mods: dict[str, nn.Module]) -> list[Any]:
    return [mods["global"].vit, mods["local"].model, mods["temporal"].model, mods["audio"].model]


def make_inputs(
    cfg: EmotionLlamaConfig, batch: int, audio_s: float, device: torch.device
) -> dict[str, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    v, p = cfg.vision.image_size, cfg.perception
    s = p.face_size

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device)

    return {
        "global": randn(batch, 3, v, v),
        "local": randn(batch, p.local_frames, 3, s, s),
        "temporal": randn(batch, p.temporal_frames, 3, s, s),
        "audio": randn(batch, int(audio_s * p.sample_rate)) * 0.1,
    }


def calls(
    mods: dict[str, nn.Module], inputs: dict[str, torch.Tensor], b: int
) -> dict[str, Callable[[], Any]]:
    """One callable per encoder over the first ``b`` clips of ``inputs``."""
    x = {k: t[:b] for k, t in inputs.items()}
    local = mods["local"]
    assert isinstance(local, LocalEncoder)
    return {
        "global": lambda: mods["global"](x["global"]),
        "local": lambda: local.encode_clips(x["local"]),
        "temporal": lambda: mods["temporal"](x["temporal"]),
        "audio": lambda: mods["audio"](x["audio"]),
    }


def sequential_row(
    variant: str, fns: dict[str, Callable[[], Any]], b: int, device: torch.device, warmup: int, repeats: int
) -> Row:
    row = Row(variant, b)
    total = 0.0
    for name in NAMES:
        sec = median_seconds(fns[name], device, repeats, warmup)
        row.ms_per_clip[name] = sec / b * 1e3
        total += sec
    row.clips_per_s = b / total
    return row


def streams_row(
    variant: str, fns: dict[str, Callable[[], Any]], b: int, device: torch.device, warmup: int, repeats: int
) -> Row:
    """The four encoders issued on four streams: small kernels of one can fill SMs another leaves
    idle. Inputs and weights live on the default stream and outlive the call, so no
    ``record_stream`` is needed; outputs are dropped."""
    streams = [torch.cuda.Stream(device) for _ in NAMES]

    def run_all() -> None:
        main = torch.cuda.current_stream(device)
        for stream, name in zip(streams, NAMES, strict=True):
            stream.wait_stream(main)
            with torch.cuda.stream(stream):
                fns[name]()
        for stream in streams:
            main.wait_stream(stream)

    sec = median_seconds(run_all, device, repeats, warmup)
    return Row(variant, b, {}, b / sec, "4 streams, timed together")


def compiled_row(
    variant: str,
    mods: dict[str, nn.Module],
    fns: dict[str, Callable[[], Any]],
    b: int,
    device: torch.device,
    repeats: int,
) -> Row:
    t0 = time.perf_counter()
    blocks = sum(compile_blocks(m) for m in mods.values())
    for name in NAMES:  # the first call at this shape compiles
        fns[name]()
    sync(device)
    compile_s = time.perf_counter() - t0
    row = sequential_row(variant, fns, b, device, 1, repeats)
    row.note = f"{blocks} blocks compiled in {compile_s:.0f} s"
    return row


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The least cosine similarity between matching clips' outputs (each flattened)."""
    a, b = a.float().flatten(1), b.float().flatten(1)
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).min())


def fp8_row(
    variant: str,
    mods: dict[str, nn.Module],
    inputs: dict[str, torch.Tensor],
    b: int,
    device: torch.device,
    repeats: int,
) -> Row:
    """The four encoders with their linear layers in FP8 (:func:`emotion_llama.model.fp8.convert_linears`:
    e4m3 weights and activations, per-row scales), on a copy, so that the plain models stay for
    the rows after this one; the note gives each encoder's least output cosine to the plain one."""
    import copy

    from emotion_llama.model.fp8 import convert_linears

    plain = {name: fn() for name, fn in calls(mods, inputs, b).items()}
    fp8_mods = copy.deepcopy(mods)
    layers = {name: convert_linears(m) for name, m in fp8_mods.items()}
    fns = calls(fp8_mods, inputs, b)
    cos = {name: _cosine(plain[name], fn()) for name, fn in fns.items()}
    row = sequential_row(variant, fns, b, device, 2, repeats)
    row.note = "FP8 layers, least cosine to plain: " + ", ".join(
        f"{name} {layers[name]} {cos[name]:.4f}" for name in NAMES
    )
    del fp8_mods, fns
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def guarded(emit: Callable[[Row], None], measure: Callable[..., Row], *args: Any) -> bool:
    """Measure an optional row and emit it; a failure is printed on one line and the run goes on
    (an optional speed-up that breaks must not lose the rows measured so far)."""
    try:
        row = measure(*args)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        print(f"{args[0]:<34} failed: {type(exc).__name__}: {first}", flush=True)
        return False
    emit(row)
    return True


def print_header(device_name: str, args: argparse.Namespace, dtype: torch.dtype) -> None:
    import transformers

    print(
        f"device: {device_name}; torch {torch.__version__}, transformers {transformers.__version__}; "
        f"project dtype {str(dtype).removeprefix('torch.')}; {'tiny' if args.tiny else 'paper'} sizes",
        flush=True,
    )
    cols = "".join(f"{n:>10}" for n in NAMES)
    print(f"{'variant':<34}{'batch':>6}{'clips/s':>10}{'x base':>8}{cols}   (ms per clip)", flush=True)


def print_row(row: Row, base: float) -> None:
    cols = "".join(f"{row.ms_per_clip[n]:>10.2f}" if n in row.ms_per_clip else f"{'-':>10}" for n in NAMES)
    ratio = row.clips_per_s / base if base else float("nan")
    note = f"   {row.note}" if row.note else ""
    print(f"{row.variant:<34}{row.batch:>6}{row.clips_per_s:>10.2f}{ratio:>7.2f}x{cols}{note}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (checks the script)")
    ap.add_argument("--batches", default=None, help="clips per batch, comma-separated (GPU: 8,16,32)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (GPU: 5)")
    ap.add_argument("--audio-s", type=float, default=None, help="seconds of audio per clip (paper: 10)")
    ap.add_argument("--compile", dest="compile", action="store_true", default=None)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--budget-s", type=float, default=330.0, help="start no new row after this many seconds")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    t_start = time.perf_counter()

    use_cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if use_cuda else "cpu")
    if not use_cuda and not args.tiny:
        sys.exit("no CUDA device: run with --tiny to check the script on the CPU")
    cfg = tiny_config() if args.tiny else paper_config()
    batches = [int(x) for x in (args.batches or ("4,8" if args.tiny else "8,16,32")).split(",")]
    repeats = args.repeats or (3 if args.tiny else 5)
    audio_s = args.audio_s or (1.0 if args.tiny else 10.0)
    do_compile = use_cuda if args.compile is None else args.compile
    # bf16 is the project's GPU dtype; on the CPU bf16 matmuls are slow and prove nothing here.
    dtype = torch.bfloat16 if use_cuda else torch.float32
    name = torch.cuda.get_device_name(device) if use_cuda else "cpu"
    # The blocks of all four models share transformers' forward wrapper, so their compiled
    # variants (per block class and input shape, about a dozen here) pile up on one code object.
    for limit in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, limit):
            setattr(torch._dynamo.config, limit, 64)

    t0 = time.perf_counter()
    mods = build(cfg, args.tiny, device)
    build_s = time.perf_counter() - t0
    inputs = make_inputs(cfg, max(batches), audio_s, device)
    print(f"(built the four encoders on {device.type} in {build_s:.1f} s)", flush=True)
    print_header(name, args, dtype)

    rows: list[Row] = []

    def over_budget(what: str) -> bool:
        if time.perf_counter() - t_start > args.budget_s:
            print(f"{what:<34} skipped: past --budget-s {args.budget_s:.0f}", flush=True)
            return True
        return False

    def payload(partial: bool) -> dict[str, Any]:
        rows_ = [r.__dict__ for r in rows]
        return {"device": name, "dtype": str(dtype), "build_s": build_s, "rows": rows_, "partial": partial}

    def emit(row: Row) -> None:
        rows.append(row)
        print_row(row, rows[0].clips_per_s)
        write_json(args.json, payload(True))

    with torch.inference_mode():
        # -- baseline: fp32, eager attention, batch 1, one encoder after the other --------------
        for m in hf_models(mods):
            m.set_attn_implementation("eager")
        base_fns = calls(mods, inputs, 1)
        emit(sequential_row("fp32 eager (baseline)", base_fns, 1, device, 1, max(3, repeats // 2)))

        # -- the project's way --------------------------------------------------------------------
        for m in mods.values():
            m.to(dtype)
        for m in hf_models(mods):
            m.set_attn_implementation("sdpa")
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its conv algorithms
        label = "bf16" if dtype == torch.bfloat16 else "fp32"
        emit(sequential_row(f"{label} sdpa", calls(mods, inputs, 1), 1, device, 2, repeats))
        for b in batches:
            if over_budget(f"{label} sdpa b{b}"):
                break
            emit(sequential_row(f"{label} sdpa", calls(mods, inputs, b), b, device, 2, repeats))
        best = max(rows[2:], key=lambda r: r.clips_per_s).batch if rows[2:] else batches[0]
        fns = calls(mods, inputs, best)
        if use_cuda and not over_budget(f"{label} sdpa + streams"):
            guarded(emit, streams_row, f"{label} sdpa + streams", fns, best, device, 2, repeats)

        # FP8 matmuls (Ada/Hopper on a GPU; on the CPU it checks the path, slowly), on copies
        if not over_budget(f"{label} sdpa + fp8"):
            guarded(emit, fp8_row, f"{label} sdpa + fp8", mods, inputs, best, device, repeats)

        compiled = False
        if do_compile and not over_budget(f"{label} sdpa + compile"):
            compiled = guarded(
                emit, compiled_row, f"{label} sdpa + compile", mods, fns, best, device, repeats
            )
        if compiled and use_cuda and not over_budget(f"{label} sdpa + compile + streams"):
            guarded(emit, streams_row, f"{label} sdpa + compile + streams", fns, best, device, 2, repeats)

    if use_cuda:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB", flush=True)
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)
    write_json(args.json, payload(False))


if __name__ == "__main__":
    main()
