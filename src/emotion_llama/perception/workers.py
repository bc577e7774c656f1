"""The per-clip work of every engine (:mod:`emotion_llama.perception.engines`): one Perceiver per
worker process, loaded once, and one clip perceived with its failure kept as a value; and the
engines' settings (:class:`Engine`, :class:`EncodeSpec`), which both engines read.

The local pool's processes call :func:`init_worker` as their initialiser; a Ray worker process
calls :func:`perceiver_for` on its first clip and keeps the Perceiver for the next ones (Ray reuses
its worker processes), so both engines run the same code on each clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotion_llama.config import EmotionLlamaConfig, PerceptionConfig
from emotion_llama.errors import EmotionLlamaError

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Engine:
    """Which engine runs the clips and how: ``workers`` (local) are the pool's processes;
    ``address`` (ray) is the cluster (``None``: ``$RAY_ADDRESS``, else a Ray started for this run
    on this machine); ``cpus_per_clip`` (ray) the CPUs each clip's task reserves; ``progress``
    (ray) shows Ray Data's own progress bars; ``encoder_actors`` (ray) the size of the encoders'
    actor pool (0: one per GPU of the cluster on a GPU device; on the CPU, 0 keeps the encoders in
    the driver, N runs them in N actors of one CPU each, wherever Ray finds a free CPU)."""

    kind: str = "local"
    workers: int = 2
    address: str | None = None
    cpus_per_clip: float = 1.0
    progress: bool = False
    encoder_actors: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise EmotionLlamaError(f"--engine must be one of {', '.join(ENGINES)}, not {self.kind!r}")
        if self.address is not None and self.kind != "ray":
            raise EmotionLlamaError("--address is for --engine ray")
        if self.workers < 1:
            raise EmotionLlamaError(f"--workers must be at least 1, not {self.workers}")
        if self.cpus_per_clip <= 0:
            raise EmotionLlamaError(f"CPUs per clip must be positive, not {self.cpus_per_clip}")
        if self.encoder_actors < 0:
            raise EmotionLlamaError(f"--encoder-actors must be 0 or more, not {self.encoder_actors}")
        if self.encoder_actors and self.kind != "ray":
            raise EmotionLlamaError("--encoder-actors is for --engine ray")


@dataclass(frozen=True)
class EncodeSpec:
    """The frozen encoders a caller wants run on each clip, and how: ``config``'s, on ``device``.
    The Ray engine runs them in an actor pool when ``device`` is a GPU, or on the CPU when it is
    given ``encoder_actors``; otherwise (and with the local engine) the driver runs them.

    How (each recorded in the feature store, :meth:`info`, so that a resumed run cannot mix
    features made two ways):

    ``dtype``
        The encoders' weights: ``None``/``"auto"`` is the project's one rule
        (:mod:`emotion_llama.precision`: bfloat16 on a CUDA GPU that has it, float32 on the CPU).
    ``fp8``
        Their linear layers in FP8 matmuls (:mod:`emotion_llama.model.fp8`; a GPU of compute
        capability 8.9+ in bfloat16, or the CPU, slowly).
    ``compile``
        Every transformer block through ``torch.compile`` (:func:`emotion_llama.encoders.models.
        compile_blocks`); not recorded: it changes no result beyond float rounding.
    ``batched``
        The clips of one batch in one forward per encoder (faster on a GPU) rather than each clip
        alone (bit-identical features whatever the batch, see
        :func:`emotion_llama.perception.pipeline.encode`). ``None``: batched on a CUDA GPU, not
        elsewhere.
    """

    config: EmotionLlamaConfig
    device: str = "cpu"
    dtype: str | None = None
    fp8: bool = False
    compile: bool = False
    batched: bool | None = None

    @property
    def on_gpu(self) -> bool:
        return not self.device.startswith("cpu")

    def in_actors(self, engine: Engine) -> bool:
        """Whether ``engine`` runs these encoders itself (the Ray engine's actor pool); else the
        driver does. On the CPU the driver keeps them unless ``engine.encoder_actors`` is set: an
        actor takes cores the clips' perception could use, which pays off on a cluster, where the
        driver's own cores would bound the rate."""
        return engine.kind == "ray" and (self.on_gpu or engine.encoder_actors > 0)

    @property
    def batches(self) -> bool:
        """Whether a batch of clips goes through each encoder in one forward."""
        from emotion_llama.precision import is_cuda

        return is_cuda(self.device) if self.batched is None else self.batched

    def resolved_dtype(self) -> str:
        """The encoders' dtype name (``float32``, ``bfloat16``, ``float16``) on this device."""
        from emotion_llama.precision import resolve_dtype

        return resolve_dtype(self.dtype, self.device, "encoder")

    def info(self) -> dict[str, Any]:
        """How the features are computed, as the store records it (``encoding``)."""
        return {"dtype": self.resolved_dtype(), "fp8": self.fp8, "batched": self.batches}

    def check_files(self) -> None:
        """Fail now, naming the file, when an encoder's source is a checkpoint file or a folder
        that is not there (before a Ray cluster's actors would each fail to load it). Hub ids
        and the registered sources are left to the loading, where they are fetched."""
        from emotion_llama.encoders.models import ORIGINAL_SUFFIXES
        from emotion_llama.errors import CheckpointError
        from emotion_llama.sources import SOURCES

        p = self.config.perception
        for source in (p.local_encoder, p.temporal_encoder, p.audio_encoder):
            if source is None or source in SOURCES:
                continue
            path = Path(source).expanduser()
            looks_local = path.suffix in ORIGINAL_SUFFIXES or source.startswith(("/", "./", "../", "~"))
            if looks_local and not path.exists():
                raise CheckpointError(source, "no such file")

    def build(self) -> Any:
        """The encoders, loaded as this spec says
        (:func:`emotion_llama.encoders.models.build_encoders`)."""
        import torch

        from emotion_llama.encoders.models import build_encoders

        dtype = getattr(torch, self.resolved_dtype())
        return build_encoders(self.config, self.device, dtype, fp8=self.fp8, compile=self.compile)


#: What every store made before ``encoding`` was recorded holds: float32, each clip alone.
LEGACY_ENCODING: dict[str, Any] = {"dtype": "float32", "fp8": False, "batched": False}


@dataclass
class ClipResult:
    """One clip as an engine hands it back to the driver: its :class:`Perception` or the error
    that stopped it (as a value: one broken clip never stops the batch); ``encoded`` when the engine
    also ran the encoders (a GPU actor pool), with ``features`` their output (``None``: the clip
    lacks a face or audio, its ``missing`` says which)."""

    path: Path
    result: Any
    encoded: bool = False
    features: Any = None


_PERCEIVER: Any = None
_PERCEIVER_KEY: Any = None


def init_worker(config: PerceptionConfig, frame: str, transcribe: bool, threads: int = 0) -> None:
    """Load this process's Perceiver (the local pool's initialiser). ``threads``: this worker's
    share of the cores (speech recognition, OpenMP)."""
    global _PERCEIVER, _PERCEIVER_KEY
    import os

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, threads)))
    from emotion_llama.perception.pipeline import Perceiver

    if _PERCEIVER is not None:
        _PERCEIVER.close()
    _PERCEIVER = Perceiver(config, frame=frame, transcribe=transcribe, threads=threads)
    _PERCEIVER_KEY = (config, frame, transcribe, threads)
    # MediaPipe closes its model through a thread pool that Python shuts down before ``atexit``
    # handlers run; close it at the same stage instead, or every worker prints a traceback at exit.
    import threading

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(_PERCEIVER.close)


def perceiver_for(config: PerceptionConfig, frame: str, transcribe: bool, threads: int) -> Any:
    """This process's Perceiver for these settings, loaded on first use and kept."""
    if _PERCEIVER is None or (config, frame, transcribe, threads) != _PERCEIVER_KEY:
        init_worker(config, frame, transcribe, threads)
    return _PERCEIVER


def perceive_one(path: str, subtitle: str | None) -> Any:
    """The clip's Perception, or its error (never raised: reported by the driver with the name)."""
    try:
        return _PERCEIVER(path, subtitle=subtitle)
    except EmotionLlamaError as exc:
        return exc
    except Exception as exc:  # a decoder or model crash on one clip must not stop the batch
        return EmotionLlamaError(f"{path}: {type(exc).__name__}: {exc}")
