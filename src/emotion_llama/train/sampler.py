"""The order in which training sees its items: one infinite stream of shuffled passes.

Each optimiser step consumes ``grad_accum`` global micro-batches of ``batch_size * W`` items
(``W`` processes). Rank ``r`` takes stream positions ``[r * B, (r + 1) * B)`` of each global
micro-batch, so one process with ``batch_size = B * W`` and ``W`` processes with ``batch_size =
B`` see the same items per step. The item at a position is a pure function of that position, so
a resume needs only the count of items consumed (:attr:`TrainingProgress.position
<emotion_llama.train.checkpointing.TrainingProgress.position>`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Sampler

from emotion_llama.train.config import TrainConfig, TrainError


def _stream(n: int, seed: int, start: int) -> Iterator[tuple[int, int]]:
    pos = start
    while True:
        p, offset = divmod(pos, n)
        perm = np.random.default_rng([seed, p]).permutation(n)
        for i in range(offset, n):
            yield int(perm[i]), pos
            pos += 1


class StreamSampler(Sampler[tuple[int, int]]):
    """Infinite shuffled passes; yields ``(index, draw)`` from stream position ``start`` on.

    Pass ``p`` is a permutation seeded by ``(seed, p)``, so the item at any position is a pure
    function of that position: resuming needs only the count of items consumed, even when
    loader workers prefetched further than the loop consumed.

    With ``world_size`` processes the stream is cut into global micro-batches of
    ``batch_size * world_size`` positions (from ``start``), and ``rank`` gets positions
    ``[rank * batch_size, (rank + 1) * batch_size)`` of each.
    """

    def __init__(
        self, n: int, seed: int, start: int = 0, *, batch_size: int = 1, rank: int = 0, world_size: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise TrainError(f"rank {rank} out of range for {world_size} processes")
        self.n, self.seed, self.start = n, seed, start
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.world_size == 1:
            yield from _stream(self.n, self.seed, self.start)
            return
        for index, pos in _stream(self.n, self.seed, self.start):
            if ((pos - self.start) // self.batch_size) % self.world_size == self.rank:
                yield index, pos


def stream_loader(
    dataset: Any, cfg: TrainConfig, start: int, *, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """This rank's batches of ``dataset`` from stream position ``start`` on, collated by the
    dataset's ``collate``."""
    sampler = StreamSampler(
        len(dataset), cfg.seed, start, batch_size=cfg.batch_size, rank=rank, world_size=world_size
    )
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=dataset.collate,
        num_workers=cfg.num_workers,
    )
