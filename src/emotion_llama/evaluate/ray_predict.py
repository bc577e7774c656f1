"""``evaluate --engine ray``: the model answers in Ray actors, the driver writes the predictions.

Each actor loads the checkpoint once (:func:`~emotion_llama.evaluate.runner.model_predict_fn`, on
one GPU of the cluster, or one CPU) and answers whole batches; the runner keeps one batch in
flight per actor and appends each batch's lines as it finishes, so ``predictions.jsonl``, the
resume and ``skipped.jsonl`` are those of a local run (the lines may come in another order). The
benchmark folder and the checkpoint must be on a file system every node sees.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emotion_llama.data.samples import Clip
from emotion_llama.errors import EmotionLlamaError
from emotion_llama.evaluate.runner import BenchmarkSpec, PredictFn, model_predict_fn


class _Answerer:
    """One actor's model; errors of a batch come back as values (the runner retries clip by clip)."""

    def __init__(self, model_dir: str, spec: BenchmarkSpec, options: dict[str, Any]) -> None:
        self.predict = model_predict_fn(model_dir, spec, **options)

    def model_name(self) -> str:
        return str(getattr(self.predict, "model_name", ""))

    def answer(self, clips: Sequence[Clip], data: str) -> list[str] | EmotionLlamaError:
        try:
            return self.predict(clips, Path(data))
        except EmotionLlamaError as exc:
            return EmotionLlamaError(str(exc))


def ray_predict_fn(
    model_dir: str | Path,
    spec: BenchmarkSpec,
    *,
    address: str | None = None,
    actors: int | None = None,
    device: str = "cpu",
    **options: Any,
) -> tuple[PredictFn, int]:
    """A thread-safe predict function over ``actors`` Ray actors (default: one per GPU of the
    cluster with a GPU ``device``, else one), and that number (the runner's concurrency).
    ``options``: :func:`model_predict_fn`'s."""
    from emotion_llama.perception.ray_engine import connect

    ray = connect(address)
    on_gpu = not device.startswith("cpu")
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("GPU", 0))) if on_gpu else 1
    resources = {"num_gpus": 1} if on_gpu else {"num_cpus": 1}
    remote = ray.remote(**resources)(_Answerer)
    opts = {**options, "device": "cuda" if on_gpu else device}
    pool: queue.Queue[Any] = queue.Queue()
    handles = [remote.remote(str(model_dir), spec, opts) for _ in range(actors)]
    try:
        name = ray.get(handles[0].model_name.remote())  # the first to load: its errors, at once
    except Exception as exc:
        raise EmotionLlamaError(f"--engine ray: the model did not load in a Ray actor ({exc})") from None
    for h in handles:
        pool.put(h)

    def predict(clips: Sequence[Clip], data: Path) -> list[str]:
        actor = pool.get()
        try:
            out = ray.get(actor.answer.remote(list(clips), str(data)))
        finally:
            pool.put(actor)
        if isinstance(out, EmotionLlamaError):
            raise out
        return list(out)

    predict.model_name = name  # type: ignore[attr-defined]
    return predict, actors
