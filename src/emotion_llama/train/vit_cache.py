"""Cached output of the frozen global encoder (EVA ViT + ``ln_vision``), computed once per clip.

The ViT and ``ln_vision`` are frozen and each clip has one frame, so the encoder's output
``(1 + N, Dv)`` for a clip never changes during training. :func:`build_vit_cache` runs the encoder
once per clip of the given datasets and writes ``<folder>/<clip>.safetensors`` (a clip name that
two sources use for different frames gets one entry per frame); training batches
then carry ``vision_tokens`` (see ``EmotionLlama.encode``) instead of ``pixel_values``, and the
ViT does not run per step.

Each file records in its metadata a fingerprint of the encoder's weights and a checksum of the
clip's preprocessed pixels. A file whose fingerprint or checksum differs (other ViT weights,
another frame, other preprocessing) is stale and rebuilt; files are written under a temporary
name and renamed, so an interrupted build leaves no half-written entry.

Storage dtype: the training dtype (fp32 for ``precision: fp32``, fp16/bf16 under autocast). Under
autocast the projection that consumes the tokens runs in that dtype anyway, so the cached path
gives the same numbers as the per-step path. Size: ``(1 + N) * Dv`` values per clip, 2.9 MB in
fp16 at the paper's sizes (1025 x 1408).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from emotion_llama.errors import EmotionLlamaError
from emotion_llama.files import atomic_write_with
from emotion_llama.model.inputs import MultimodalInputs
from emotion_llama.train.data import TrainDataset, TrainSample

FORMAT = "emotion-llama-vit-cache-1"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,120}$")


class VitCacheError(EmotionLlamaError, ValueError):
    """A cached ViT entry is missing or was made with other weights."""


def vit_fingerprint(encoder: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the encoder's parameters and buffers
    (the ViT and ``ln_vision``): any change of weights gives another fingerprint."""
    h = hashlib.sha256(FORMAT.encode())
    for name, t in sorted(encoder.state_dict().items()):
        data = t.detach().contiguous().cpu()
        h.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        # Through a byte view: numpy has no bfloat16.
        h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def pixel_checksum(pixels: torch.Tensor) -> str:
    """SHA-256 of a clip's preprocessed pixel tensor (frame content and preprocessing)."""
    data = pixels.detach().contiguous().cpu().to(torch.float32)
    return hashlib.sha256(data.numpy().tobytes()).hexdigest()


def cache_file_name(clip: str) -> str:
    """``<clip>.safetensors`` for plain names; other names get a sanitised stem plus a hash, so
    that no name can escape the folder or collide with another."""
    if _SAFE_NAME.match(clip) and clip not in (".", ".."):
        return f"{clip}.safetensors"
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", clip)[:80].strip(".") or "clip"
    return f"{stem}-{hashlib.sha1(clip.encode()).hexdigest()[:12]}.safetensors"


def _frame_pixels(dataset: TrainDataset, sample: TrainSample) -> torch.Tensor:
    frame = sample.frame
    if not isinstance(frame, np.ndarray):
        from emotion_llama.media.frames import read_frame

        frame = read_frame(frame)
    return dataset.processor.preprocess_image(frame)


def _frame_ref(sample: TrainSample) -> str:
    return str(sample.frame) if isinstance(sample.frame, Path) else ""


def entry_keys(datasets: Sequence[TrainDataset]) -> dict[tuple[str, str], str]:
    """``(clip name, frame path)`` -> cache entry name: the clip name, or, for a name that comes
    with several frames (mixed sources), the name plus a hash of the frame path."""
    frames: dict[str, set[str]] = {}
    for ds in datasets:
        for options in ds.clips:
            for s in options:
                frames.setdefault(s.name, set()).add(_frame_ref(s))
    keys: dict[tuple[str, str], str] = {}
    for name, refs in frames.items():
        for ref in refs:
            keys[(name, ref)] = (
                name if len(refs) == 1 else f"{name}@{hashlib.sha1(ref.encode()).hexdigest()[:10]}"
            )
    return keys


@dataclass
class VitCache:
    """A folder of cached encoder outputs made with the encoder of fingerprint ``fingerprint``."""

    folder: Path
    fingerprint: str
    dtype: torch.dtype
    keys: dict[tuple[str, str], str] = field(default_factory=dict)

    def key(self, sample: TrainSample) -> str:
        return self.keys.get((sample.name, _frame_ref(sample)), sample.name)

    def path(self, clip: str) -> Path:
        return self.folder / cache_file_name(clip)

    def _read(self, clip: str) -> tuple[dict[str, str], torch.Tensor] | None:
        from safetensors import SafetensorError, safe_open

        path = self.path(clip)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                tokens = f.get_tensor("vision_tokens")
        except (SafetensorError, OSError, ValueError, KeyError):
            return None
        return meta, tokens

    def is_fresh(self, clip: str, checksum: str) -> bool:
        found = self._read(clip)
        if found is None:
            return False
        meta, tokens = found
        return (
            meta.get("format") == FORMAT
            and meta.get("vit") == self.fingerprint
            and meta.get("pixels") == checksum
            and meta.get("clip") == clip
            and tokens.dtype == self.dtype
        )

    def load(self, clip: str) -> torch.Tensor:
        """The cached ``(1 + N, Dv)`` tokens of ``clip``; an error if absent or made with another
        encoder (the cache is rebuilt by :func:`build_vit_cache`, never silently mixed)."""
        found = self._read(clip)
        if found is None:
            raise VitCacheError(
                f"{self.path(clip)}: no cached ViT output for clip {clip!r}; rebuild the cache"
            )
        meta, tokens = found
        if meta.get("vit") != self.fingerprint:
            raise VitCacheError(f"{self.path(clip)}: made with other ViT weights; rebuild the cache")
        return tokens

    def write(self, clip: str, tokens: torch.Tensor, checksum: str) -> None:
        from safetensors.torch import save_file

        path = self.path(clip)
        meta = {"format": FORMAT, "vit": self.fingerprint, "pixels": checksum, "clip": clip}
        tensors = {"vision_tokens": tokens.detach().to(self.dtype).contiguous().cpu()}
        # each process writes its own temporary file; a crash leaves no partial file under the name
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


@dataclass
class BuildStats:
    clips: int = 0
    built: int = 0
    reused: int = 0


def build_vit_cache(
    encoder: nn.Module,
    datasets: Sequence[TrainDataset],
    folder: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    autocast: Callable[[], Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 8,
    show_progress: bool = False,
) -> tuple[VitCache, BuildStats]:
    """Make sure every clip of ``datasets`` has a fresh entry in ``folder``, computing the missing
    or stale ones with ``encoder`` (in eval mode, no gradients, under ``autocast()`` when given).

    With several processes, rank ``r`` handles every ``world_size``-th clip; the caller waits for
    all ranks before reading. Returns the cache and this rank's counts.
    """
    from emotion_llama.progress import progress_bar

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = entry_keys(datasets)
    cache = VitCache(folder, vit_fingerprint(encoder), dtype, keys)
    clips: dict[str, tuple[TrainDataset, TrainSample]] = {}
    for ds in datasets:
        for options in ds.clips:
            for sample in options:
                clips.setdefault(cache.key(sample), (ds, sample))
    mine = sorted(clips)[rank::world_size]
    stats = BuildStats(clips=len(mine))
    was_training = encoder.training
    encoder.eval()
    pending: list[tuple[str, torch.Tensor, str]] = []

    def flush() -> None:
        if not pending:
            return
        pixels = torch.stack([p for _, p, _ in pending]).to(device)
        with torch.no_grad(), autocast() if autocast is not None else contextlib.nullcontext():
            tokens = encoder(pixels)
        for (clip, _, checksum), t in zip(pending, tokens, strict=True):
            cache.write(clip, t, checksum)
        stats.built += len(pending)
        pending.clear()

    try:
        with progress_bar(show_progress) as bar:
            task = bar.add_task("caching ViT outputs", total=len(mine))
            for clip in mine:
                ds, sample = clips[clip]
                pixels = _frame_pixels(ds, sample)
                checksum = pixel_checksum(pixels)
                if cache.is_fresh(clip, checksum):
                    stats.reused += 1
                else:
                    pending.append((clip, pixels, checksum))
                    if len(pending) >= batch_size:
                        flush()
                bar.advance(task)
            flush()
    finally:
        encoder.train(was_training)
    return cache, stats


class CachedVisionDataset(Dataset[dict[str, Any]]):
    """A :class:`TrainDataset` whose items carry ``vision_tokens`` from a :class:`VitCache` instead
    of ``pixel_values``; same indexing, draws and collation. Frames are not decoded.

    It wraps the dataset (which is left untouched): an item is the dataset's own, built with the
    cached encoder output as its frame input."""

    def __init__(self, dataset: TrainDataset, cache: VitCache) -> None:
        self.base = dataset
        self.cache = cache
        self.processor = dataset.processor
        self.clips = dataset.clips

    def __len__(self) -> int:
        return len(self.base)

    def names(self) -> list[str]:
        return self.base.names()

    def vision(self, sample: TrainSample) -> dict[str, torch.Tensor]:
        """The clip's cached ``(1 + N, Dv)`` encoder output, as ``vision_tokens``."""
        return {"vision_tokens": self.cache.load(self.cache.key(sample))}

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, draw = key if isinstance(key, tuple) else (key, 0)
        return self.base.item(int(index), int(draw), vision=self.vision)

    def collate(self, items: list[dict[str, Any]]) -> MultimodalInputs:
        # The dataset's own collation: it stacks whichever frame input the items carry.
        return self.base.collate(items)
