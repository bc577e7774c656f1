"""Clip names as data: kept as the file system gives them, written safely, shown readably.

On POSIX a file name is bytes. Python hands names that are not valid UTF-8 over as ``str`` with
*surrogate escapes* (byte ``0xff`` becomes ``"\\udcff"``), which open and rename the right file
again but cannot be encoded as UTF-8 text. Three views of one name are used:

- the **name** itself (``Path.stem``): the key of feature stores and label lists, so that features
  written for ``bad_\\xff.mp4`` are found again under that file's name. Its JSON form escapes just
  the undecodable bytes (:func:`json_dumps`), which Python's ``json`` reads back to the same name;
- :func:`printable`: for messages, tables and plot titles; undecodable bytes as ``\\xff`` and
  control characters as escapes, so one odd name never breaks a terminal or a log line;
- :func:`record_id`: for formats that need a plain token (the dataset builder's record names,
  which are space-separated NCEV fields and file names of report cards): the name itself when it
  already is one, else a readable form plus a short hash of the name's bytes, so two names never
  share an id.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

#: The lone surrogates that Python's ``surrogateescape`` uses for undecodable bytes 0x80-0xff.
_SURROGATE = re.compile("[\udc80-\udcff]")
#: What a record id may not contain: whitespace, path separators, undecodable bytes, controls.
_NOT_IN_ID = re.compile(r"[\s/\\\x00-\x1f\x7f\udc80-\udcff]")
#: Longest id: names of hundreds of bytes are legal file names but not useful tokens.
_MAX_ID = 120


def raw_bytes(name: str) -> bytes:
    """The bytes of the name on disk (what ``os.fsencode`` gives on a UTF-8 system)."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file system produced (e.g. from JSON)
        return name.encode("utf-8", "backslashreplace")


def is_text(name: str) -> bool:
    """True when the name is valid Unicode text (no undecodable bytes)."""
    return _SURROGATE.search(name) is None


def printable(name: object) -> str:
    """The name for people: undecodable bytes as ``\\xNN``, control characters escaped."""
    text = raw_bytes(str(name)).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def record_id(name: str) -> str:
    """A token for ``name`` with no whitespace, separators or undecodable bytes; the name itself
    when it has none (so ordinary datasets keep their names), else its readable form with a short
    hash of its bytes: ``"with space"`` -> ``"with_space~3b1f0c2a"``."""
    if name and not _NOT_IN_ID.search(name) and len(name) <= _MAX_ID and name not in (".", ".."):
        return name
    readable = _NOT_IN_ID.sub("_", raw_bytes(name).decode("utf-8", "replace").replace("\ufffd", "_"))
    digest = hashlib.sha1(raw_bytes(name)).hexdigest()[:8]
    return f"{readable[: _MAX_ID - 9].strip('.') or 'clip'}~{digest}"


def _escape_surrogates(text: str) -> str:
    # A lone surrogate in json.dumps(ensure_ascii=False) output can only sit inside a string, where
    # the six-character escape is valid JSON and reads back as the same character.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` with readable Unicode that is always encodable as UTF-8: names holding
    undecodable bytes come out escaped (``"\\udcff"``) and ``json.loads`` gives them back as they
    were."""
    kwargs.setdefault("ensure_ascii", False)
    return _escape_surrogates(json.dumps(obj, **kwargs))


def json_bytes(obj: Any, **kwargs: Any) -> bytes:
    """:func:`json_dumps` as UTF-8 bytes, with a final newline."""
    return (json_dumps(obj, **kwargs) + "\n").encode("utf-8")


def text_for_file(text: str) -> str:
    """Text destined for a UTF-8 text format (CSV, TSV, Markdown) with undecodable bytes shown as
    ``\\xNN``: such formats cannot carry them, and a record id or the JSON files carry the name."""
    return text if is_text(text) else printable(text)
