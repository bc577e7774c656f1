"""Where the server's videos may come from, and the checks every one of them passes before the
predictor sees it. No FastAPI here: the functions take plain values and raise :class:`ApiError`
with the HTTP status the client should get.

The four ways to name a video (``video_url`` of a chat message):

- ``upload://ID``: a file sent earlier to ``POST /v1/files`` (kept in the server's temp folder
  until its time-to-live runs out, see :class:`~emotion_llama.serve.uploads.UploadStore`);
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
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from emotion_llama.serve.errors import ApiError, forbidden, too_large

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
