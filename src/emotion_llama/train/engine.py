"""The engine under the loop: ``accelerate`` (one process, DDP, FSDP, DeepSpeed ZeRO-2/3).

``accelerate.Accelerator`` places the model, wraps it (DDP...), runs autocast (``bf16``;
``fp16`` with a grad scaler; ``fp32``), scales and accumulates gradients and reduces values
across processes. On CPU accelerate makes neither the fp16 autocast nor the scaler (it would
train in fp32 without a word), so :func:`make_accelerator` adds torch's own
(``torch.amp.GradScaler("cpu")``). Under ``train.fsdp`` the same scaler serves: its overflow
check on sharded (DTensor) gradients reduces the flag over the processes, so an inf in one
process's shard skips the step on all (tested). FSDP and DeepSpeed come from an accelerate config file (see
``configs/accelerate/``); :func:`engine_kind` tells the loop which one it runs under, since
checkpoints of sharded engines are written differently (:mod:`emotion_llama.train.checkpointing`).
accelerate runs those two on GPUs only: asked for on CPU it falls back to DDP, which
:func:`check_engine` refuses rather than train another engine than the config file says. The
project's own FSDP2 path (``train.fsdp``, :mod:`emotion_llama.train.fsdp`) shards the model under
a DDP launch, on CPU too; the accelerator then wraps the optimiser only. Its own DeepSpeed path
(``train.deepspeed``, :mod:`emotion_llama.train.deepspeed_engine`) hands the model and optimiser
to ``deepspeed.initialize`` under a DDP launch, on CPU too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.train.config import TrainConfig, TrainError
from emotion_llama.train.schedule import param_groups

if TYPE_CHECKING:
    from accelerate import Accelerator

EngineKind = Literal["plain", "fsdp", "fsdp2", "deepspeed", "deepspeed3"]
#: Engines whose parameters are sharded over the processes (no rank holds the full weights).
SHARDED: tuple[str, ...] = ("fsdp", "fsdp2", "deepspeed3")
_MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_accelerator(cfg: TrainConfig, out: Path) -> Accelerator:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import ProjectConfiguration

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        # Several runs in one process (tests, notebooks) may use other precisions; accelerate
        # keeps one global state and refuses to change it. Outside a process group it is safe to
        # start afresh.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    device = torch.device(cfg.device)
    if device.type == "cuda" and device.index is not None and "LOCAL_RANK" not in os.environ:
        torch.cuda.set_device(device.index)
    log_with = None if cfg.log_with == "none" else cfg.log_with
    if log_with == "wandb":
        from accelerate.utils import is_wandb_available

        if not is_wandb_available():
            raise TrainError("train.log_with is wandb but wandb is not installed (pip install wandb)")
    if log_with == "tensorboard":
        from accelerate.utils import is_tensorboard_available

        if not is_tensorboard_available():
            raise TrainError("train.log_with is tensorboard but tensorboard is not installed")
    accelerator = Accelerator(
        mixed_precision=_MIXED[cfg.precision],
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=device.type == "cpu",
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out)),
    )
    cpu_fp16 = cfg.precision == "fp16" and accelerator.device.type == "cpu"
    if cpu_fp16 and accelerator.scaler is None and not cfg.deepspeed:
        # accelerate skips both on CPU; they must exist before ``prepare`` (the optimiser wrapper
        # and the model's autocast forward read them there). DeepSpeed scales the loss itself.
        accelerator.native_amp = True
        accelerator.scaler = torch.amp.GradScaler("cpu")
    return accelerator


def engine_kind(accelerator: Accelerator, cfg: TrainConfig) -> EngineKind:
    """``plain`` (one process or DDP), ``fsdp`` (accelerate's), ``fsdp2`` (the project's,
    ``train.fsdp``), ``deepspeed`` or ``deepspeed3``."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if _ddp_launch(accelerator):
        if cfg.fsdp:
            return "fsdp2"
        if cfg.deepspeed:
            from emotion_llama.train.deepspeed_engine import read_config, zero_stage

            return "deepspeed3" if zero_stage(read_config(cfg.deepspeed)) == 3 else "deepspeed"
    if kind == DistributedType.FSDP:
        return "fsdp"
    if kind == DistributedType.DEEPSPEED:
        plugin = accelerator.state.deepspeed_plugin
        stage = int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0)) if plugin else 0
        return "deepspeed3" if stage == 3 else "deepspeed"
    return "plain"


#: The environment variables ``accelerate launch`` sets from a config file's ``distributed_type``.
_LAUNCH_ENGINES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


def check_engine(cfg: TrainConfig, accelerator: Accelerator) -> None:
    """Refuse settings the engine cannot run, and an engine accelerate did not set up."""
    kind = engine_kind(accelerator, cfg)
    own = "train.fsdp" if cfg.fsdp else "train.deepspeed" if cfg.deepspeed else None
    if own is not None and not _ddp_launch(accelerator):
        n = accelerator.num_processes
        run = "one plain process" if n == 1 else f"{accelerator.distributed_type.value} with {n} processes"
        raise TrainError(
            f"{own} shards the model over the processes of a DDP launch (torchrun, or accelerate "
            f"launch with configs/accelerate/ddp.yaml); this run is {run}"
        )
    for var, name in _LAUNCH_ENGINES.items():
        if os.environ.get(var, "false").lower() == "true" and kind == "plain":
            raise TrainError(
                f"accelerate was launched for {name} ({var}=true) but set up "
                f"{accelerator.distributed_type.value} on {accelerator.device.type}: accelerate runs "
                f"{name} on GPUs only and would train plain data-parallel here; on CPU use "
                "configs/accelerate/ddp.yaml or torchrun (with train.fsdp=true for the project's FSDP2)"
            )
    if cfg.eval_metrics and kind in SHARDED:
        raise TrainError("train.eval_metrics needs unsharded weights; turn it off under FSDP or ZeRO-3")


def _ddp_launch(accelerator: Accelerator) -> bool:
    """Several processes that accelerate set up as plain data-parallel (no FSDP/DeepSpeed plugin)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)


def own_deepspeed(accelerator: Accelerator, cfg: TrainConfig) -> bool:
    """Whether DeepSpeed runs through the project's path (``train.deepspeed`` under a DDP launch),
    not through accelerate's plugin."""
    return bool(cfg.deepspeed) and _ddp_launch(accelerator)


def fill_deepspeed_config(accelerator: Accelerator, cfg: TrainConfig) -> None:
    """accelerate's DeepSpeed fills its "auto" batch sizes from a prepared DataLoader; this loop
    shards the stream itself, so they are filled from the recipe here (before ``prepare``)."""
    from emotion_llama.train.deepspeed_engine import fill_batch_sizes

    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:
        fill_batch_sizes(plugin.deepspeed_config, cfg, accelerator.num_processes)


def prepare(accelerator: Accelerator, model: EmotionLlama, cfg: TrainConfig) -> tuple[Any, Any]:
    """AdamW over the trainable parameters (weight decay on matrices only, the lr of step 0) and
    the engine's wrapped model and optimiser."""
    if engine_kind(accelerator, cfg) == "fsdp2":
        from emotion_llama.train.fsdp import shard_model, shard_summary

        # The optimiser is made over the sharded parameters; accelerate must not wrap the model
        # in DDP, so it gets the optimiser only (the grad scaler and accumulation steps).
        shard_model(model, accelerator.device)
        if accelerator.is_main_process:
            print(shard_summary(model), flush=True)
        return model, accelerator.prepare(_adamw(model, cfg))
    if own_deepspeed(accelerator, cfg):
        from emotion_llama.train.deepspeed_engine import initialize

        return initialize(model, _adamw(model, cfg), cfg, accelerator.num_processes)
    optimizer = _adamw(model, cfg)
    fill_deepspeed_config(accelerator, cfg)
    engine_model, optimizer = accelerator.prepare(model, optimizer)
    return engine_model, optimizer


def _adamw(model: EmotionLlama, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model.named_parameters(), cfg.weight_decay), lr=cfg.schedule.lr(0), betas=cfg.betas
    )


def gather_objects(accelerator: Accelerator, obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (a collective: every process calls it)."""
    if accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return list(gather_object([obj]))


def precision_dtype(cfg: TrainConfig) -> torch.dtype:
    return _DTYPES[cfg.precision]


def autocast(cfg: TrainConfig, device: torch.device) -> Any:
    """Autocast to the training precision outside the accelerator (validation, the ViT cache)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def set_gradient_checkpointing(model: EmotionLlama, on: bool) -> None:
    """Activation checkpointing of the LLM's decoder layers (non-reentrant), on or off."""
    llm = model.llm
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x
        if on:
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif gradient_checkpointing_on(model):
            base.activation_checkpointing_disable()
    elif on:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif gradient_checkpointing_on(model):
        base.gradient_checkpointing_disable()


def gradient_checkpointing_on(model: EmotionLlama) -> bool:
    llm = model.llm
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    if hasattr(type(base), "is_activation_checkpointing"):
        return bool(base.is_activation_checkpointing)
    return bool(getattr(base, "is_gradient_checkpointing", False))


def decoder_layers(model: EmotionLlama) -> Any:
    llm = model.llm
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return base.model.layers


def set_compiled_layers(model: EmotionLlama, on: bool) -> None:
    """Each of the LLM's decoder layers compiled in place (``nn.Module.compile``: the parameter
    names and the state dict stay as they are), or back to eager. Dynamic shapes: the batches'
    lengths vary, and one compiled graph serves them all."""
    for layer in decoder_layers(model):
        if on:
            layer.compile(dynamic=True)
        else:
            layer._compiled_call_impl = None  # what nn.Module.compile set


def compiled_layers(model: EmotionLlama) -> int:
    """How many of the LLM's decoder layers run compiled."""
    return sum(getattr(layer, "_compiled_call_impl", None) is not None for layer in decoder_layers(model))
