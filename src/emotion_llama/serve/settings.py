"""What ``emotion-llama serve`` can set (:class:`ServeSettings`); the defaults are the CLI's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
#: Room for multipart framing and form fields on top of the file size limit.
BODY_OVERHEAD = 1 << 20


@dataclass
class ServeSettings:
    """Everything ``emotion-llama serve`` can set; the defaults are the CLI's."""

    #: Folders whose files clients may name by path (``file://`` or absolute); none: paths refused.
    allow_roots: tuple[Path, ...] = ()
    #: Hosts videos may be downloaded from (``HOST``, ``HOST:PORT``, ``*.DOMAIN``); none: URLs refused.
    allow_url_hosts: tuple[str, ...] = ()
    #: Largest video (upload, download or data URL), in MiB; a request body may add 1 MiB to it.
    max_upload_mb: float = 200.0
    #: Predictor calls at once (the predictor itself runs one at a time).
    max_concurrency: int = 1
    #: Requests for /v1/analyze and chat (not streamed) that arrive together are answered in one
    #: batch of up to this many (:class:`MicroBatcher`); 1 turns batching off. At least this many
    #: requests are let through the queue at once, to be batched.
    max_batch: int = 4
    #: How long the first request of a batch waits for others, in seconds.
    batch_wait_s: float = 0.05
    #: Requests waiting for the predictor beyond those; more get 429.
    max_queue: int = 8
    #: Queue wait + predictor time of one request, in seconds; past it, 504.
    timeout_s: float = 600.0
    #: Bearer token required on /v1/*; ``None``: open.
    api_key: str | None = None
    #: Parent of the server's temp folder (uploads, downloads); ``None``: the system's.
    tmp_dir: Path | None = None
    #: How long ``POST /v1/files`` uploads are kept.
    upload_ttl_s: float = 3600.0
    #: All kept uploads together, in MiB.
    max_stored_mb: float = 2048.0
    download_timeout_s: float = 60.0
    #: Batch jobs kept in memory (finished ones are evicted oldest first).
    max_jobs: int = 32
    max_batch_files: int = 64
    #: Files per ``analyze_many`` call of a batch job.
    batch_chunk: int = 4
    #: The web page's folder, mounted at ``/`` when it exists.
    static_dir: Path | None = STATIC_DIR
    # -- what a client may hold of the server (:mod:`.limits`); 0 turns a time limit off
    #: Seconds a client has to send a complete request head, from the connection's opening or
    #: the end of its previous response; then the connection is closed (408 if part of a head came).
    head_timeout_s: float = 10.0
    #: Longest pause within a request body, in seconds; a body also has this long plus one second
    #: per ``body_min_rate_kib`` KiB it sent. Past either, 408 and the connection is closed.
    body_timeout_s: float = 30.0
    #: The slowest a body may come on average after its first ``body_timeout_s``, in KiB/s.
    body_min_rate_kib: float = 16.0
    #: Open connections at once (idle kept-alive ones too); more get 503 and are closed.
    max_connections: int = 256
    #: Largest JSON body (``/v1/chat/completions``, or any ``Content-Type: application/json``), in
    #: MiB: parsed, JSON costs up to ~25x its size in memory. Bigger videos go to ``/v1/files``.
    max_json_mb: float = 4.0
    #: Request bodies (uploads and JSON) read at once; more wait up to ``body_wait_s``, then 429.
    max_body_reads: int = 8
    body_wait_s: float = 10.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + BODY_OVERHEAD

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 2**20)
