"""Reading and writing weight files, with errors that name the file and say what is wrong.

The bottom floor of the weights code: ``torch.load`` only with ``weights_only=True`` (a pickle that
holds anything but tensors is refused), safetensors read and written atomically. The model's
checkpoints and the frozen encoders' weights both read through here.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from emotion_llama.errors import CheckpointError
from emotion_llama.files import atomic_output


def read_torch_file(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` and an error that names the file and says what is
    wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "the file is empty (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(4)
    is_zip_header = head.startswith(b"PK\x03\x04")
    if not is_zip_header and not head.startswith(b"\x80"):  # zip archive, or a pickle (protocol 2+)
        raise CheckpointError(path, f"not a PyTorch checkpoint (starts with {head!r})")
    if is_zip_header and not zipfile.is_zipfile(path):
        raise CheckpointError(path, "truncated or corrupt: the zip archive has no central directory")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip_header)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        text = _first_sentence(str(exc)) or type(exc).__name__
        if "Unsupported global" in str(exc) or "Unsupported class" in str(exc):
            problem = "holds objects other than tensors; refused to unpickle (weights_only=True)"
        elif isinstance(exc, EOFError) or "central directory" in text or "truncated" in text:
            problem = f"truncated or corrupt ({text})"
        else:
            problem = f"not a readable PyTorch checkpoint ({text})"
        raise CheckpointError(path, problem) from None


def shape_mismatches(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> list[str]:
    """``"key (shape) (expected shape)"`` for each key of ``expected`` whose tensor has another shape."""
    return [
        f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
        for k in expected
        if tuple(state[k].shape) != expected[k]
    ]


def _first_sentence(text: str, limit: int = 160) -> str:
    """The informative part of torch's loader messages (they open with generic advice)."""
    m = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if m:
        return m.group(1).strip().split(". ")[0][:limit]
    for line in text.splitlines():
        line = line.strip()
        if line and not line.lower().startswith(("weights only load failed", "please file")):
            return line.split(". ")[0][:limit]
    return ""


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"not a readable safetensors file ({exc})") from None


def write_safetensors(state: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    """Atomic: a crash never leaves a half-written file under the final name."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
