"""A client's video made ready for the predictor (:class:`Prepared`): an upload, a download, a data
URL or an allowed local path (:meth:`VideoInputs.prepare`), or a file part of a form
(:meth:`VideoInputs.checked`), sniffed; and the server's paths kept out of what the client sees
(:meth:`VideoInputs.scrub`). The checks themselves are :mod:`.inputs`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotion_llama.serve.errors import ApiError
from emotion_llama.serve.inputs import (
    check_url,
    check_video_file,
    decode_data_url,
    display_name,
    download,
    resolve_local,
)
from emotion_llama.serve.settings import ServeSettings
from emotion_llama.serve.uploads import UploadStore


@dataclass
class Prepared:
    """A video ready for the predictor: its path on the server, the clip's name, how the client
    named it (errors show that, never the server's paths) and what to do when done with it."""

    path: Path
    name: str
    shown: str
    on_release: Callable[[], None] | None = None

    def release(self) -> None:
        fn, self.on_release = self.on_release, None
        if fn is not None:
            fn()


class VideoInputs:
    """The videos of one server: uploads from ``uploads``, the other inputs written to ``work``,
    both under the temp folder ``tmp``; what is allowed is in ``settings``."""

    def __init__(self, settings: ServeSettings, *, uploads: UploadStore, work: Path, tmp: Path) -> None:
        self.settings = settings
        self.uploads = uploads
        self.work = work
        self.tmp = tmp

    async def checked(self, path: Path, name: str, shown: str, *, temporary: bool) -> Prepared:
        """Sniff ``path``; a temporary file gets the container's extension and is removed on
        release (or at once when it is not a video)."""
        try:
            ext = await asyncio.to_thread(check_video_file, path)
        except BaseException:
            if temporary:
                path.unlink(missing_ok=True)
            raise
        if not temporary:
            return Prepared(path, name, shown)
        final = path.with_suffix(ext)
        path.rename(final)
        return Prepared(final, name, shown, lambda: final.unlink(missing_ok=True))

    async def prepare(self, url: str) -> Prepared:
        """A chat message's video reference -> a checked local file."""
        s = self.settings
        if url.startswith("upload://"):
            fid = url[len("upload://") :]
            stored = self.uploads.lease(fid)
            name = Path(stored.filename).stem or fid
            return Prepared(stored.path, name, stored.filename, lambda: self.uploads.release(fid))
        tmp = self.work / f"in-{uuid.uuid4().hex}"
        if url.startswith(("http://", "https://")):
            check_url(url, s.allow_url_hosts)
            shown = display_name(url.split("?", 1)[0], "download")
            await download(url, tmp, allowed=s.allow_url_hosts, max_bytes=s.max_upload_bytes,
                           timeout_s=s.download_timeout_s)  # fmt: skip
            return await self.checked(tmp, Path(shown).stem or "download", shown, temporary=True)
        if url.startswith("data:"):
            await asyncio.to_thread(decode_data_url, url, tmp, max_bytes=s.max_upload_bytes)
            return await self.checked(tmp, "video", "the data URL", temporary=True)
        if url.startswith("file:") or url.startswith("/"):
            path = resolve_local(url, s.allow_roots)
            return await self.checked(path, path.stem, url, temporary=False)
        scheme = url.split(":", 1)[0][:20] if ":" in url else ""
        raise ApiError(
            400,
            f"unsupported video reference{f' (scheme {scheme!r})' if scheme else ''}: use upload://ID, "
            "http(s)://, data:video/...;base64, file:///PATH or an absolute path",
            code="invalid_video_url",
        )

    def clean_message(self, text: str, prepared: Prepared | None = None) -> str:
        """A predictor message without the server's paths."""
        if prepared is not None:
            text = text.replace(str(prepared.path), prepared.shown)
        return text.replace(str(self.tmp), "<server temp>")

    def scrub(self, value: Any, prepared: Prepared | None) -> Any:
        """``value`` (a result's JSON) with the server's paths replaced as :meth:`clean_message` does."""
        if isinstance(value, str):
            return self.clean_message(value, prepared)
        if isinstance(value, dict):
            return {k: self.scrub(v, prepared) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v, prepared) for v in value]
        return value
