"""The server's Prometheus metrics (``GET /metrics``), in a registry of their own (several apps can
live in one process). The gauges read the server through the callables they are given."""

from __future__ import annotations

from collections.abc import Callable


class Metrics:
    """The request counters and latencies (counted by :class:`~.middleware.MetricsMiddleware`),
    the predictor's outcomes, and gauges of the queue, the running calls, the batch jobs (by
    status) and the kept uploads."""

    def __init__(
        self,
        *,
        queue_depth: Callable[[], float],
        running: Callable[[], float],
        stored_bytes: Callable[[], float],
        job_counts: Callable[[], dict[str, int]],
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self._job_counts = job_counts
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "emotion_llama_http_requests", "HTTP requests by route, method and status.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "emotion_llama_http_request_duration_seconds", "Time to answer a request (streams: to the end).",
            ["route"], registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
        )  # fmt: skip
        self.in_flight = Gauge(
            "emotion_llama_http_requests_in_flight", "HTTP requests being answered.", registry=r
        )
        self.predictions = Counter(
            "emotion_llama_predictions", "Predictor calls by outcome.", ["outcome"], registry=r
        )
        queue = Gauge("emotion_llama_queue_depth", "Requests waiting for the predictor.", registry=r)
        queue.set_function(queue_depth)
        busy = Gauge("emotion_llama_predictor_busy", "Predictor calls running now.", registry=r)
        busy.set_function(running)
        self.jobs = Gauge("emotion_llama_batch_jobs", "Batch jobs kept, by status.", ["status"], registry=r)
        stored = Gauge("emotion_llama_upload_store_bytes", "Bytes of kept uploads.", registry=r)
        stored.set_function(stored_bytes)

    def prediction(self, outcome: str) -> None:
        """Count one predictor call (``"ok"`` or ``"error"``)."""
        self.predictions.labels(outcome).inc()

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        for status, n in self._job_counts().items():
            self.jobs.labels(status).set(n)
        return generate_latest(self.registry)
