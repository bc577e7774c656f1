"""Run by tests/test_train_distributed.py under torchrun (two processes): the tiny model trained
with ``train.fsdp`` in fp16, a checkpoint every step. With ``overflow``, the first unscale of rank 0
finds an inf in one element of its own gradient shard, which no other process holds.

    python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_overflow_driver.py DATA OUT STOP [overflow]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from emotion_llama.model.builder import build_model
from emotion_llama.train.config import TrainConfig
from emotion_llama.train.data import TrainDataset, read_training_folder
from emotion_llama.train.loop import train
from emotion_llama.train.schedule import Schedule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import engine_config


def poison_first_unscale() -> None:
    """Rank 0's first ``unscale_``: one element of a LoRA gradient shard becomes inf (in whichever
    scaler class the engine made: torch's, or FSDP's sharded one)."""
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    calls = [0]

    def patched(original: Any) -> Any:
        def unscale_(self: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
            calls[0] += 1
            if calls[0] == 1 and dist.get_rank() == 0:
                grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
                local = grads[-1].to_local() if isinstance(grads[-1], DTensor) else grads[-1]
                local.view(-1)[0] = float("inf")
            original(self, optimizer)

        return unscale_

    for cls in (torch.amp.GradScaler, ShardedGradScaler):
        cls.unscale_ = patched(cls.unscale_)  # type: ignore[method-assign]


def main() -> None:
    data, out, stop = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    if len(sys.argv) > 4 and sys.argv[4] == "overflow":
        poison_first_unscale()
    cfg, processor = engine_config()
    train_set = TrainDataset(read_training_folder(data, cfg, split="train"), processor, seed=3)
    tc = TrainConfig(
        schedule=Schedule("constant", 1e-2), epochs=1, iters_per_epoch=4, batch_size=2, seed=5,
        precision="fp16", out_dir=out, log_every=100, log_with="none", save_every=1, keep_last=4,
        fsdp=True,
    )  # fmt: skip
    train(build_model(cfg), processor, train_set, tc, stop_after_step=stop)


if __name__ == "__main__":
    main()
