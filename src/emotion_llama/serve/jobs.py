"""Batch jobs of ``POST /v1/analyze/batch``: kept in memory (a restart forgets them), at most
``max_jobs`` at a time; when the store is full the oldest finished job makes room, and when every
job is still queued or running a new one is refused (429).

A job's files are analysed in chunks through :meth:`Predictor.analyze_many` (one LLM batch per
chunk); a file that fails gets its error in its place and the others go on.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from emotion_llama.serve.errors import ApiError, rate_limited

JobStatus = Literal["queued", "running", "done"]
ItemStatus = Literal["pending", "done", "error"]


@dataclass
class JobItem:
    name: str
    #: The file on the server; ``None`` once analysed (it is deleted then) or when rejected.
    path: Path | None
    subtitle: str | None = None
    #: The client's file name (errors name the file by it).
    filename: str | None = None
    status: ItemStatus = "pending"
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "result": self.result, "error": self.error}


@dataclass
class Job:
    id: str
    items: list[JobItem]
    question: str | None = None
    status: JobStatus = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        done = sum(i.status != "pending" for i in self.items)
        return {
            "id": self.id,
            "object": "analysis.batch",
            "status": self.status,
            "status_url": f"/v1/analyze/batch/{self.id}",
            "created_at": int(self.created),
            "started_at": None if self.started is None else int(self.started),
            "finished_at": None if self.finished is None else int(self.finished),
            "question": self.question,
            "total": len(self.items),
            "completed": done,
            "failed": sum(i.status == "error" for i in self.items),
            "results": [i.to_dict() for i in self.items],
        }


class JobStore:
    """The jobs, by id, thread-safe."""

    def __init__(self, max_jobs: int) -> None:
        self.max_jobs = max(1, max_jobs)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def add(self, items: list[JobItem], question: str | None) -> Job:
        with self._lock:
            if len(self._jobs) >= self.max_jobs:
                finished = [j for j in self._jobs.values() if j.status == "done"]
                if not finished:
                    raise rate_limited(
                        f"{self.max_jobs} batch jobs are already queued or running; retry later",
                        "too_many_jobs",
                        30,
                    )
                del self._jobs[min(finished, key=lambda j: j.finished or 0.0).id]
            job = Job(f"batch-{uuid.uuid4().hex}", items, question)
            self._jobs[job.id] = job
            return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no batch job {job_id!r} (unknown or evicted)", code="job_not_found")
        return job

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = {"queued": 0, "running": 0, "done": 0}
            for j in self._jobs.values():
                out[j.status] += 1
            return out

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())
