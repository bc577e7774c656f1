"""The Ray engine (``--engine ray``): the clips of a command through Ray Data's streaming execution.

The pipeline, for the clips still to do::

    from_items(one row per clip)            one block per clip: the cluster balances clip by clip
      .map(perceive, num_cpus=1)             CPU tasks: decoding, faces and AUs, speech (the same
                                             Perceiver as the local pool's workers, loaded once per
                                             Ray worker process and kept)
      .map_batches(Encoders,                 only when the encoders run in actors: on a GPU --device
           ActorPoolStrategy, num_gpus=1)    an actor per GPU; --encoder-actors N on the CPU (MAE,
                                             VideoMAE, HuBERT loaded once per actor; --batch-size
                                             clips a call when the encoders batch)
      .iter_rows()                           back in the driver, which writes each clip atomically

Ray retries a task whose worker or node died (Ray Data's tasks retry without limit, its actors
restart), so a lost node loses no clip; and since only the driver writes, an interrupted run leaves
finished clips or nothing, as the local engine does. The rows carry pickled values (a clip's path
may hold bytes that are not UTF-8, which Arrow strings cannot).

``pip install 'emotion-llama[ray]'`` installs Ray; every node needs the project installed (the
same version) and the videos and output folder on a file system they all see.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from emotion_llama.config import PerceptionConfig
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.perception.workers import ClipResult, EncodeSpec, Engine, perceive_one, perceiver_for

#: Environment variables the workers get from the driver (offline switches, caches).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM")
FORWARDED_PREFIX = "EMOTION_LLAMA_"

_CONNECTED: dict[str, Any] = {}

#: Ray's ``memory`` (a logical scheduling resource, not a limit) each CPU encoder actor reserves:
#: a node takes an actor only with this much unreserved (the tiny encoders need far less, the
#: paper's three in float32 about 4 GB).
ENCODER_ACTOR_MEMORY = 1 << 30


def import_ray() -> Any:
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
        import ray.data  # Ray Data is the part the engine uses
    except ImportError as exc:
        raise EmotionLlamaError(
            f"--engine ray needs Ray Data: pip install 'emotion-llama[ray]' ({exc})"
        ) from None
    return ray


def connect(address: str | None) -> Any:
    """Ray, connected: to ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``), else to
    ``$RAY_ADDRESS``, else to a Ray started now on this machine for this process. The workers get
    the driver's offline switches and cache folders (:data:`FORWARDED_ENV`)."""
    ray = import_ray()
    key = address or os.environ.get("RAY_ADDRESS") or "local"
    if ray.is_initialized():  # this process's Ray already (a caller's ray.init, or an earlier run)
        here = ray.get_runtime_context().gcs_address
        if address is None or key in (_CONNECTED.get("key"), here):
            return ray
        ray.shutdown()
    env = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV or k.startswith(FORWARDED_PREFIX)}
    kwargs: dict[str, Any] = {
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "runtime_env": {"env_vars": env},
    }
    if key == "local":
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=None if key == "local" else key, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EmotionLlamaError(f"--engine ray: cannot reach the Ray cluster at {key} ({exc})") from None
    _CONNECTED["key"] = key
    return ray


def _perceive_row(
    row: dict[str, Any], *, config: PerceptionConfig, frame: str, threads: int, cwd: str = ""
) -> dict[str, Any]:
    """One clip, in a Ray worker: its Perception (or its error) pickled into the row. The worker
    works in the driver's folder, so a relative path opens the same file and the clip's
    ``source`` is written as the local engine writes it."""
    if cwd and os.getcwd() != cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    path, subtitle = pickle.loads(row["job"])
    perceiver_for(config, frame, True, threads)
    return {"i": row["i"], "result": pickle.dumps(perceive_one(path, subtitle), protocol=5)}


class _Encoders:
    """The frozen encoders of one actor (a GPU, or a CPU of the cluster), built as ``spec`` says,
    applied to each batch of rows Ray Data hands over (one clip, or ``--batch-size`` clips when
    the spec batches) as the driver encodes a batch
    (:func:`emotion_llama.perception.pipeline.encode_each`: a clip the encoders fail on fails
    alone, its error in place of its result)."""

    def __init__(self, spec: EncodeSpec, threads: int = 0) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)  # the CPUs this actor reserved, no more
        self.spec = spec
        self.encoders = spec.build()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from emotion_llama.perception.pipeline import encode_each

        results = [pickle.loads(b) for b in batch["result"]]
        ok = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
        features: list[Any] = [None] * len(results)
        feats = encode_each(
            [results[i] for i in ok], self.encoders, device=self.spec.device, batched=self.spec.batches
        )
        for i, feat in zip(ok, feats, strict=True):
            if isinstance(feat, Exception):
                results[i] = EmotionLlamaError(
                    f"{results[i].source}: encoders failed ({type(feat).__name__}: {feat})"
                )
            else:
                features[i] = feat
        return {
            "i": batch["i"],
            "result": [pickle.dumps(r, protocol=5) for r in results],
            "features": [pickle.dumps(f, protocol=5) for f in features],
        }


def ray_perceive(
    todo: list[Path],
    config: PerceptionConfig,
    frame: str,
    subtitles: dict[str, str],
    engine: Engine,
    *,
    encode: EncodeSpec | None = None,
    ordered: bool = False,
    batch_size: int = 8,
) -> Iterator[ClipResult]:
    """The clips of ``todo`` through the cluster, as :class:`ClipResult` s in completion order
    (``ordered``: in ``todo``'s order); the encoders' actors (when ``encode`` puts them there)
    take ``batch_size`` clips a call."""
    ray = connect(engine.address)
    ds = _dataset(ray, todo, config, frame, subtitles, engine, encode, ordered, batch_size)
    in_actors = encode is not None and encode.in_actors(engine)
    rows = iter(ds.iter_rows())
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as exc:  # the cluster gave up (e.g. the encoders' actors cannot start)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise EmotionLlamaError(
                f"--engine ray: the run stopped on the cluster ({type(exc).__name__}: {first}); the clips "
                "written so far are kept, a rerun does the rest"
            ) from None
        path = todo[int(row["i"])]
        result = pickle.loads(row["result"])
        features = pickle.loads(row["features"]) if in_actors else None
        yield ClipResult(path, result, encoded=in_actors, features=features)


def _dataset(
    ray: Any,
    todo: list[Path],
    config: PerceptionConfig,
    frame: str,
    subtitles: dict[str, str],
    engine: Engine,
    encode: EncodeSpec | None,
    ordered: bool,
    batch_size: int,
) -> Any:
    """The Ray Data pipeline of :func:`ray_perceive` (see the module docstring), not yet run."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = engine.progress
    # Ray Data's plan and progress lines go to the log; the command shows its own progress bar
    logging.getLogger("ray.data").setLevel(logging.INFO if engine.progress else logging.ERROR)
    ctx.execution_options.preserve_order = ordered
    rows = [{"i": i, "job": pickle.dumps((str(v), subtitles.get(v.stem)))} for i, v in enumerate(todo)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    threads = max(1, int(engine.cpus_per_clip))
    ds = ds.map(
        _perceive_row,
        fn_kwargs={"config": config, "frame": frame, "threads": threads, "cwd": os.getcwd()},
        num_cpus=engine.cpus_per_clip,
    )
    if encode is not None and encode.in_actors(engine):
        ds = _with_encoders(ray, ds, encode, engine, batch_size)
    return ds


def _with_encoders(ray: Any, ds: Any, encode: EncodeSpec, engine: Engine, batch_size: int) -> Any:
    """``ds`` followed by the encoders' actor pool: on a GPU ``--device``, an actor per GPU of the
    cluster (or ``engine.encoder_actors`` of them), one GPU each; on the CPU,
    ``engine.encoder_actors`` actors of one CPU each. Their resources differ from the perception
    tasks', so Ray Data keeps the two stages apart. Each call gets ``batch_size`` clips when the
    spec batches, else one."""
    from ray.data import ActorPoolStrategy

    size = engine.encoder_actors
    resources: dict[str, Any]
    if encode.on_gpu:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus < 1:
            raise EmotionLlamaError(
                f"--device {encode.device} with --engine ray: the Ray cluster has no GPU "
                "(start its nodes with GPUs, or use --device cpu)"
            )
        if size > gpus:
            raise EmotionLlamaError(
                f"--encoder-actors {size}: the Ray cluster has {gpus} GPU(s), one for each actor"
            )
        size = size or gpus
        # the dtype as the driver resolved and recorded it, on the actor's GPU
        spec = replace(encode, device="cuda", dtype=encode.resolved_dtype())
        resources, threads = {"num_gpus": 1}, 0
    else:
        spec = replace(encode, dtype=encode.resolved_dtype())
        # the memory reservation also keeps Ray Data from fusing the perception tasks into these
        # actors, which an equal request (one CPU) would make it do: every clip would then be
        # perceived in the N actors alone
        resources, threads = {"num_cpus": 1, "memory": ENCODER_ACTOR_MEMORY}, 1
    return ds.map_batches(
        _Encoders,
        fn_constructor_kwargs={"spec": spec, "threads": threads},
        batch_size=max(1, batch_size) if encode.batches else 1,
        batch_format="numpy",
        compute=ActorPoolStrategy(min_size=1, max_size=size),
        **resources,
    )
