"""``multipart/form-data`` bodies parsed as they stream in (:func:`read_multipart`): file parts go
straight to disk, never whole into memory, and the upload stops with 413 as soon as the files pass
the limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotion_llama.serve.errors import ApiError, too_large
from emotion_llama.serve.inputs import display_name
from emotion_llama.serve.uploads import UploadStore


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


def one_file(form: Form) -> FilePart:
    """The form's only file part; 400 (and the files removed) when it has none or several."""
    if len(form.files) != 1:
        form.discard()
        raise ApiError(400, "send exactly one file, in a multipart part named 'file'", code="missing_file")
    return form.files[0]
