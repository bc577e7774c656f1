"""Where the server's videos may come from, and the checks every one of them passes before the
predictor sees it. No FastAPI here: the functions take plain values and raise :class:`ApiError`
with the HTTP status the client should get.

The four ways to name a video (``video_url`` of a chat message):

- ``upload://ID``: a file sent earlier to ``POST /v1/files`` (kept in the server's temp folder
  until its time-to-live runs out, see :class:`UploadStore`);
- ``http(s)://HOST/...``: downloaded, only from hosts on the allow-list, with a size limit and a
  timeout, redirects followed only to allowed hosts;
- ``data:video/mp4;base64,...``: decoded in the request;
- ``file:///ABS/PATH`` or ``/ABS/PATH``: only under an allowed root, after resolving symlinks, with
  ``..`` refused outright.

Every file is then sniffed (:func:`check_video_file`): a container's magic bytes, else PyAV must
find a video stream in it; anything else is a 415.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


class ApiError(Exception):
    """An error answered as OpenAI-style JSON: ``{"error": {"message", "type", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}


def forbidden(message: str, code: str) -> ApiError:
    return ApiError(403, message, code=code, type="permission_error")


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request is larger than the server's limit of {limit / 2**20:.0f} MiB",
        code="payload_too_large",
    )


# -- file types ------------------------------------------------------------------------------------
#: (offset, magic, extension) of the containers a video arrives in.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", ".mp4"),  # MP4, MOV, M4V, 3GP
    (4, b"moov", ".mov"),  # old QuickTime without ftyp
    (4, b"mdat", ".mov"),
    (4, b"wide", ".mov"),
    (0, b"\x1a\x45\xdf\xa3", ".mkv"),  # Matroska, WebM
    (0, b"FLV", ".flv"),
    (0, b"OggS", ".ogv"),
    (0, b"\x00\x00\x01\xba", ".mpg"),  # MPEG program stream
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", ".wmv"),  # ASF
)
SNIFF_BYTES = 1024
#: Formats PyAV can "open" that are not video containers (an ANSI-art or plain-text demuxer).
_NOT_VIDEO_FORMATS = frozenset({"tty", "txt", "bin", "lrc", "srt", "webvtt", "ass", "jacosub", "mpl2"})


def sniff_container(head: bytes) -> str | None:
    """The file extension of the container whose magic bytes start ``head``, else ``None``."""
    for offset, magic, ext in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return ext
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return ".avi"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:  # MPEG-TS sync bytes
        return ".ts"
    return None


def check_video_file(path: Path) -> str:
    """The container extension of ``path``; :class:`ApiError` 415 when it is not a video (magic
    bytes first; else PyAV must open it and find a video stream)."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    ext = sniff_container(head)
    if ext is not None:
        return ext
    if head:
        import av

        try:
            with av.open(str(path), mode="r") as container:
                name = (container.format.name or "").split(",")[0]
                if container.streams.video and name not in _NOT_VIDEO_FORMATS:
                    return f".{name}" if name.isalnum() else ".video"
        except Exception:  # any PyAV failure means "not a video we can read"
            pass
    raise ApiError(
        415,
        "the file is not a video (accepted: MP4/MOV, MKV/WebM, AVI, MPEG-TS/PS, FLV, OGG, ASF, or "
        "anything else FFmpeg opens with a video stream)",
        code="unsupported_media_type",
    )


def display_name(filename: str | None, fallback: str = "video") -> str:
    """A client's file name made safe to show and to use as a clip name: no folders, no control
    characters, at most 120 characters."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    return name[:120] or fallback


# -- local paths -----------------------------------------------------------------------------------
def resolve_local(raw: str, roots: Sequence[Path]) -> Path:
    """``file:///ABS/PATH`` or ``/ABS/PATH`` -> the resolved file, only when it lies under one of
    ``roots`` (themselves resolved). ``..`` anywhere is refused before resolving; symlinks are
    followed and their target must also lie under a root."""
    if not roots:
        raise forbidden(
            "local paths are disabled on this server (it was started without --allow-root)",
            "path_not_allowed",
        )
    text = raw
    if raw.startswith("file:"):
        parts = urlsplit(raw)
        if parts.netloc not in ("", "localhost"):
            raise forbidden("file:// URLs must name a local path (no host)", "path_not_allowed")
        text = unquote(parts.path)
    if "\x00" in text:
        raise ApiError(400, "the path contains a NUL byte", code="invalid_path")
    if not text.startswith("/"):
        raise ApiError(400, "give an absolute path (or file:///ABS/PATH)", code="invalid_path")
    if ".." in Path(text).parts:
        raise forbidden("'..' is not allowed in paths", "path_traversal")
    resolved = Path(os.path.realpath(text))
    if not any(resolved.is_relative_to(r) for r in roots):
        raise forbidden("the path is outside the server's allowed roots", "path_not_allowed")
    if not resolved.is_file():
        raise ApiError(404, "no such file under the allowed roots", code="file_not_found")
    return resolved


def resolve_roots(roots: Sequence[str | Path]) -> tuple[Path, ...]:
    """The allowed roots, resolved; each must be an existing folder."""
    out = []
    for r in roots:
        p = Path(os.path.realpath(Path(r).expanduser()))
        if not p.is_dir():
            raise ValueError(f"--allow-root {r}: not a folder")
        out.append(p)
    return tuple(out)


# -- URLs ------------------------------------------------------------------------------------------
def host_allowed(url: str, allowed: Sequence[str]) -> bool:
    """Whether ``url`` (http or https) points at an allowed host. Entries: ``HOST`` (any port),
    ``HOST:PORT`` or ``*.DOMAIN`` (its subdomains)."""
    parts = urlsplit(url)
    # Credentials and backslashes are where URL parsers disagree about the host: refused, so that
    # the host checked here is the host the download connects to.
    if parts.scheme not in ("http", "https") or "@" in parts.netloc or "\\" in url or not parts.hostname:
        return False
    host = parts.hostname.lower().rstrip(".")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    for entry in allowed:
        entry = entry.strip().lower()
        want_host, _, want_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if want_port and (not want_port.isdigit() or int(want_port) != port):
            continue
        if want_host.startswith("*."):
            if host.endswith(want_host[1:]):
                return True
        elif host == want_host:
            return True
    return False


def check_url(url: str, allowed: Sequence[str]) -> None:
    if not host_allowed(url, allowed):
        if not allowed:
            raise forbidden(
                "video URLs are disabled on this server (it was started without --allow-url-host)",
                "url_not_allowed",
            )
        raise forbidden("the URL's host is not on the server's allow-list", "url_not_allowed")


async def download(url: str, dest: Path, *, allowed: Sequence[str], max_bytes: int, timeout_s: float) -> Path:
    """``url`` saved to ``dest`` (redirects followed up to 5 times, each to an allowed host); 413
    past ``max_bytes`` (checked on the header and while streaming), 504 past ``timeout_s``, 400
    when the server answers anything but 200. ``dest`` is removed on failure."""
    import asyncio

    import httpx

    async def fetch() -> None:
        target = url
        async with httpx.AsyncClient(follow_redirects=False, timeout=timeout_s) as client:
            for _ in range(6):
                check_url(target, allowed)
                async with client.stream("GET", target) as resp:
                    if resp.is_redirect and "location" in resp.headers:
                        target = str(resp.url.join(resp.headers["location"]))
                        continue
                    if resp.status_code != 200:
                        raise ApiError(
                            400, f"the video URL answered HTTP {resp.status_code}", code="download_failed"
                        )
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise too_large(max_bytes)
                    got = 0
                    with dest.open("wb") as f:
                        async for chunk in resp.aiter_bytes():
                            got += len(chunk)
                            if got > max_bytes:
                                raise too_large(max_bytes)
                            f.write(chunk)
                    return
            raise ApiError(400, "the video URL redirects too often", code="download_failed")

    try:
        await asyncio.wait_for(fetch(), timeout_s)
    except TimeoutError:
        dest.unlink(missing_ok=True)
        raise ApiError(
            504, f"downloading the video took longer than {timeout_s:g} s", code="download_timeout",
            type="timeout_error",
        ) from None  # fmt: skip
    except ApiError:
        dest.unlink(missing_ok=True)
        raise
    except httpx.HTTPError as exc:
        dest.unlink(missing_ok=True)
        raise ApiError(
            400, f"could not download the video ({type(exc).__name__})", code="download_failed"
        ) from None
    return dest


_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,", re.I)


def decode_data_url(url: str, dest: Path, *, max_bytes: int) -> Path:
    """A ``data:video/...;base64,`` URL written to ``dest``."""
    m = _DATA_URL.match(url[:256])
    if m is None:
        raise ApiError(400, "data URLs must look like data:video/mp4;base64,...", code="invalid_data_url")
    mime = (m.group("mime") or "").lower()
    if mime and not (mime.startswith("video/") or mime == "application/octet-stream"):
        raise ApiError(415, f"a data URL of type {mime} is not a video", code="unsupported_media_type")
    payload = url[m.end() :]
    if len(payload) * 3 // 4 > max_bytes:
        raise too_large(max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "the data URL is not valid base64", code="invalid_data_url") from None
    dest.write_bytes(data)
    return dest


# -- uploads ---------------------------------------------------------------------------------------
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
                raise ApiError(
                    429,
                    "the server's upload storage is full; delete files (DELETE /v1/files/ID) or retry later",
                    code="storage_full",
                    type="rate_limit_error",
                    headers={"Retry-After": str(max(1, int(self.ttl_s / 4)))},
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


# -- streamed multipart bodies ---------------------------------------------------------------------
@dataclass
class FilePart:
    field: str
    filename: str
    path: Path
    size: int


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[FilePart] = field(default_factory=list)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def discard(self) -> None:
        for f in self.files:
            f.path.unlink(missing_ok=True)


class _FormSink:
    """python-multipart callbacks writing file parts straight to disk under ``dest``."""

    def __init__(self, dest: Path, max_file_bytes: int, max_files: int, max_field_bytes: int) -> None:
        self.dest = dest
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.max_field_bytes = max_field_bytes
        self.form = Form()
        self.file_bytes = 0
        self._headers: dict[bytes, bytes] = {}
        self._hname = b""
        self._hvalue = b""
        self._out: Any = None
        self._part: FilePart | None = None
        self._field: tuple[str, bytearray] | None = None

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": lambda d, s, e: self._grow("_hname", d[s:e]),
            "on_header_value": lambda d, s, e: self._grow("_hvalue", d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def _grow(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_end(self) -> None:
        self._headers[self._hname.lower()] = self._hvalue
        self._hname = self._hvalue = b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            self._field = (name, bytearray())
            return
        if len(self.form.files) >= self.max_files:
            raise ApiError(400, f"at most {self.max_files} files per request", code="too_many_files")
        path = self.dest / f"{UploadStore.new_id()}.part"
        self._part = FilePart(name, display_name(filename.decode("utf-8", "replace")), path, 0)
        self.form.files.append(self._part)
        self._out = path.open("wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self._part is not None:
            self.file_bytes += n
            if self.file_bytes > self.max_file_bytes:
                raise too_large(self.max_file_bytes)
            self._out.write(data[start:end])
            self._part.size += n
        elif self._field is not None:
            if len(self._field[1]) + n > self.max_field_bytes:
                raise ApiError(413, f"form field {self._field[0]!r} is too long", code="payload_too_large")
            self._field[1].extend(data[start:end])

    def on_part_end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
            self._part = None
        elif self._field is not None:
            name, value = self._field
            self.form.fields.setdefault(name, []).append(value.decode("utf-8", "replace"))
            self._field = None

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def read_multipart(
    chunks: AsyncIterator[bytes],
    content_type: str,
    dest: Path,
    *,
    max_file_bytes: int,
    max_files: int = 1,
    max_field_bytes: int = 64 * 1024,
) -> Form:
    """A ``multipart/form-data`` body parsed as it arrives: file parts go straight to ``dest``
    (never whole into memory), and the upload stops with 413 as soon as the files pass
    ``max_file_bytes`` together, so at most that much is ever written."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, options = parse_options_header(content_type.encode("latin-1", "replace"))
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ApiError(400, "send the video as multipart/form-data", code="invalid_content_type")
    sink = _FormSink(dest, max_file_bytes, max_files, max_field_bytes)
    parser = MultipartParser(boundary, sink.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except ApiError:
        sink.close()
        sink.form.discard()
        raise
    except Exception as exc:  # python-multipart's parse errors, a client that went away
        sink.close()
        sink.form.discard()
        raise ApiError(
            400, f"malformed multipart body ({type(exc).__name__})", code="invalid_multipart"
        ) from None
    sink.close()
    return sink.form


def dir_size(path: Path) -> int:
    """Bytes of the files under ``path`` (the tests watch the temp folder with it)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
