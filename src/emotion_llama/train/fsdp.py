"""The project's own FSDP: PyTorch's FSDP2 (``fully_shard``) without accelerate's wrapper.

``train.fsdp: true`` shards the model over the processes of a DDP launch (``torchrun`` or
``accelerate launch --config_file configs/accelerate/ddp.yaml``), on CPU (gloo) as on GPUs
(NCCL): accelerate (1.16) sets FSDP up for GPU-like devices only. Each transformer layer of the
LLM and of the ViT is one shard unit, the rest of the model (embeddings, projections, norms, the
LM head) the root unit. The accelerator still places batches, runs autocast and the grad scaler,
and reduces values; the loop asks :func:`set_gradient_sync` to reduce gradients on the last
micro-batch of a step only.

Checkpoints stay the project's format: the main process gathers the full trainable weights
(``model.safetensors``, what a one-process model loads) and the full optimiser state, keyed by
parameter name (``trainer_state.pt``), so a run resumes with any number of processes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from emotion_llama.model.modeling import EmotionLlama
from emotion_llama.train.config import TrainError

#: Class names of the modules sharded as units of their own: the LLaMA decoder layers (any
#: ``...DecoderLayer``) and the EVA ViT's BLIP-2 encoder layers.
_UNIT_SUFFIXES = ("DecoderLayer", "EncoderLayer")


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules :func:`shard_model` shards one by one (outermost first, none nested)."""
    units: list[nn.Module] = []
    inside: set[int] = set()  # ids of the modules within a unit already found
    for module in model.modules():  # parents come before their children
        if id(module) not in inside and type(module).__name__.endswith(_UNIT_SUFFIXES):
            units.append(module)
            inside.update(id(m) for m in module.modules())
    return units


def shard_model(model: EmotionLlama, device: torch.device) -> EmotionLlama:
    """Shard ``model`` in place over the default process group, from the main process's weights,
    and return it."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not (dist.is_available() and dist.is_initialized()):
        raise TrainError(
            "train.fsdp shards the model over processes: launch with torchrun or accelerate launch "
            "(configs/accelerate/ddp.yaml), not as one plain process"
        )
    model.to(device)
    # Every process keeps its own slice of its own copy: they must be the same copy (FSDP1's
    # sync_module_states), whatever seeded or loaded them.
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def shard_summary(model: nn.Module) -> str:
    """What this process holds of the sharded model's parameters (printed at the start)."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    local = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params)
    units = sum(1 for m in model.modules() if type(m).__name__.startswith("FSDP"))
    return (
        f"train.fsdp: {units} FSDP2 units over {dist.get_world_size()} processes; this process holds "
        f"{local:,} of the {total:,} parameters ({100 * local / max(total, 1):.0f}%)"
    )


def set_gradient_sync(engine_model: Any, sync: bool) -> None:
    """Reduce-scatter gradients in this backward (``True``) or accumulate them unreduced."""
    engine_model.set_requires_gradient_sync(sync)


def _options(**kwargs: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kwargs)


def gathered_state(engine_model: Any, *, trainable_only: bool) -> dict[str, torch.Tensor]:
    """The full weights under the module's names, on the main process (empty elsewhere); every
    process calls this. ``trainable_only`` leaves the frozen weights (most of the model) out."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return dict(get_model_state_dict(engine_model, options=_options(ignore_frozen_params=trainable_only)))


def gathered_optimizer_state(engine_model: Any, optimizer: Any) -> dict[str, Any]:
    """The full optimiser state keyed by parameter name, on the main process; every process
    calls this."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    inner = _inner(optimizer)
    if not inner.state:
        # No step taken yet (or only skipped ones): torch's helper would take a zero-gradient step
        # to create the state, leaving AdamW's step count at 1 in the running optimiser.
        names = {id(p): n for n, p in engine_model.named_parameters()}
        groups = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": [names[id(p)] for p in g["params"]]}
            for g in inner.param_groups
        ]
        return {"state": {}, "param_groups": groups}
    return dict(get_optimizer_state_dict(engine_model, inner, options=_options()))


def load_optimizer_state(engine_model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """A full optimiser state (of :func:`gathered_optimizer_state`, read by every process) into
    this process's shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not state.get("state"):
        return  # saved before any step: the fresh optimiser is that state (see above)
    # strict=False: a parameter that never had a gradient has no AdamW state, saved or running.
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_optimizer_state_dict(engine_model, _inner(optimizer), state, options=options)


def _inner(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimiser under accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)
