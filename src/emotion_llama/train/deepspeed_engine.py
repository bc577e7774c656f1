"""The project's own DeepSpeed: ZeRO-2/3 through ``deepspeed.initialize``, without accelerate's plugin.

``train.deepspeed: configs/accelerate/ds_zero2.json`` (or ``ds_zero3.json``) under a DDP launch
(``torchrun``, or ``accelerate launch`` with ``configs/accelerate/ddp.yaml``) hands the model and
AdamW to DeepSpeed on the process group the launch made. accelerate (1.16) sets its own
DeepSpeed up for GPU-like devices only; this path also runs on DeepSpeed's CPU accelerator (gloo).
The DeepSpeed engine then does the backward pass (loss scaling, the gradient reduction, the
accumulation boundary) and the optimiser step; accelerate still places batches and reduces the
logged values. Checkpoints: ``model.safetensors`` as always (ZeRO-3: gathered on the main
process), the optimiser partitions in DeepSpeed's own folder (``step_N/deepspeed/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.train.config import TrainConfig, TrainError


def read_config(path: str | Path) -> dict[str, Any]:
    """A DeepSpeed JSON config."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrainError(f"train.deepspeed: cannot read {file}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise TrainError(f"{file}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TrainError(f"{file}: a DeepSpeed config is a JSON object")
    return data


def zero_stage(ds: dict[str, Any]) -> int:
    return int((ds.get("zero_optimization") or {}).get("stage", 0))


def fill_batch_sizes(ds: dict[str, Any], cfg: TrainConfig, world: int) -> None:
    """The "auto" batch sizes from the recipe (this loop shards the stream itself, so DeepSpeed has
    no DataLoader to read them from); a set value that disagrees with the recipe is an error."""
    filled = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.batch_size * cfg.grad_accum * world,
    }
    for key, value in filled.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
        elif int(ds[key]) != value:
            raise TrainError(f"DeepSpeed config sets {key}={ds[key]} but the recipe implies {value}")


def fill_precision(ds: dict[str, Any], cfg: TrainConfig) -> None:
    """``fp16.enabled`` / ``bf16.enabled`` "auto" from ``train.precision``; a set value that
    disagrees with it is an error."""
    for section in ("fp16", "bf16"):
        want = cfg.precision == section
        block = ds.setdefault(section, {})
        if block.get("enabled", "auto") == "auto":
            block["enabled"] = want
        elif bool(block["enabled"]) != want:
            raise TrainError(
                f"DeepSpeed config sets {section}.enabled={block['enabled']} but train.precision is "
                f"{cfg.precision}"
            )


def prepared_config(cfg: TrainConfig, world: int) -> dict[str, Any]:
    """``train.deepspeed``'s JSON with its "auto" values filled from the recipe."""
    assert cfg.deepspeed is not None
    ds = read_config(cfg.deepspeed)
    fill_batch_sizes(ds, cfg, world)
    fill_precision(ds, cfg)
    return ds


def check_precision(cfg: TrainConfig) -> None:
    """Refuse a precision DeepSpeed's accelerator here lacks (its CPU accelerator has fp16 only
    where oneDNN runs it: AVX512-FP16 or AMX CPUs)."""
    from deepspeed.accelerator import get_accelerator

    accel = get_accelerator()
    supported = {"fp16": accel.is_fp16_supported, "bf16": accel.is_bf16_supported}
    if cfg.precision in supported and not supported[cfg.precision]():
        usable = [p for p, ok in supported.items() if ok()] + ["fp32"]
        raise TrainError(
            f"train.precision {cfg.precision}: DeepSpeed's {accel.device_name()} accelerator does not "
            f"support it (deepspeed {_version()}); use {' or '.join(usable)} here"
        )


def _version() -> str:
    import deepspeed

    return str(deepspeed.__version__)


def initialize(
    model: EmotionLlama, optimizer: torch.optim.Optimizer, cfg: TrainConfig, world: int
) -> tuple[Any, Any]:
    """The DeepSpeed engine (the model to call) and its optimiser, on the launch's process group."""
    try:
        import deepspeed
    except ImportError:
        raise TrainError(
            "train.deepspeed needs DeepSpeed: pip install 'emotion-llama[deepspeed]' (deepspeed 0.19.8)"
        ) from None
    check_precision(cfg)
    engine, ds_optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=prepared_config(cfg, world), dist_init_required=False
    )
    return engine, ds_optimizer


def gathered_state(engine: Any, *, trainable_only: bool) -> dict[str, torch.Tensor]:
    """ZeRO-3: the full weights under the module's names on the main process (every process calls
    this); ``trainable_only`` leaves the frozen ones out."""
    state = engine._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=trainable_only)
    return dict(state or {})  # None on the other processes
