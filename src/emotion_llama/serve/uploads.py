"""The files of ``POST /v1/files`` (:class:`UploadStore`): kept in the server's temp folder for a
time-to-live, all together at most a size, in memory only (a restart forgets them). A request
using a file holds a lease on it; expiry and deletion wait for the leases to end.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotion_llama.serve.errors import ApiError, rate_limited

_UPLOAD_ID = re.compile(r"^file-[0-9a-f]{32}$")


@dataclass
class StoredFile:
    id: str
    path: Path
    filename: str
    size: int
    created: float
    expires: float
    #: Requests using the file now; cleanup waits for them.
    leases: int = 0

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": int(self.created),
            "expires_at": int(self.expires),
            "filename": self.filename,
            "purpose": "video",
            "url": f"upload://{self.id}",
        }


class UploadStore:
    """Files of ``POST /v1/files`` in ``root``, each kept ``ttl_s`` seconds, together at most
    ``max_total`` bytes. In memory: a restart forgets them (and the temp folder goes with it)."""

    def __init__(self, root: Path, *, ttl_s: float, max_total: int) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self.max_total = max_total
        self._files: dict[str, StoredFile] = {}
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return f"file-{uuid.uuid4().hex}"

    def total(self) -> int:
        with self._lock:
            return sum(f.size for f in self._files.values())

    def add(self, path: Path, filename: str) -> StoredFile:
        """Take ``path`` (already in ``root``, already checked) into the store."""
        size = path.stat().st_size
        self.expire()
        with self._lock:
            if sum(f.size for f in self._files.values()) + size > self.max_total:
                path.unlink(missing_ok=True)
                raise rate_limited(
                    "the server's upload storage is full; delete files (DELETE /v1/files/ID) or retry later",
                    "storage_full",
                    max(1, int(self.ttl_s / 4)),
                )
            now = time.time()
            fid = path.stem if _UPLOAD_ID.match(path.stem) else self.new_id()
            stored = StoredFile(fid, path, filename, size, now, now + self.ttl_s)
            self._files[fid] = stored
            return stored

    def lease(self, fid: str) -> StoredFile:
        with self._lock:
            f = self._files.get(fid) if _UPLOAD_ID.match(fid) else None
            if f is None or (f.expires < time.time() and not f.leases):
                raise ApiError(404, f"no uploaded file {fid!r} (unknown or expired)", code="file_not_found")
            f.leases += 1
            return f

    def release(self, fid: str) -> None:
        with self._lock:
            f = self._files.get(fid)
            if f is not None:
                f.leases = max(0, f.leases - 1)

    def delete(self, fid: str) -> bool:
        with self._lock:
            f = self._files.pop(fid, None) if _UPLOAD_ID.match(fid) else None
        if f is None:
            return False
        if not f.leases:
            f.path.unlink(missing_ok=True)
        return True

    def expire(self) -> int:
        """Remove expired files nobody uses; how many."""
        now = time.time()
        with self._lock:
            gone = [f for f in self._files.values() if f.expires < now and not f.leases]
            for f in gone:
                del self._files[f.id]
        for f in gone:
            f.path.unlink(missing_ok=True)
        return len(gone)


async def expire_forever(store: UploadStore) -> None:
    """Remove the store's expired files every quarter of their time-to-live (1 s to 1 min)."""
    period = max(1.0, min(60.0, store.ttl_s / 4))
    while True:
        await asyncio.sleep(period)
        store.expire()
