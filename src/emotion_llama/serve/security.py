"""The server's checks on what clients send, gathered under one name (the modules hold them):

- :mod:`.errors`: :class:`ApiError`, the error every check raises, with the client's HTTP status;
- :mod:`.inputs`: where a video may come from (uploads, allowed URL hosts, data URLs, paths under
  allowed roots) and the sniffing every file passes before the predictor sees it;
- :mod:`.uploads`: the store of ``POST /v1/files``;
- :mod:`.multipart`: upload bodies, parsed as they stream in, to disk, with a size limit;
- :mod:`.workspace`: the server's temp folder.
"""

from __future__ import annotations

from emotion_llama.serve.errors import ApiError, forbidden, too_large
from emotion_llama.serve.inputs import (
    SNIFF_BYTES,
    check_url,
    check_video_file,
    decode_data_url,
    display_name,
    download,
    host_allowed,
    resolve_local,
    resolve_roots,
    sniff_container,
)
from emotion_llama.serve.multipart import FilePart, Form, read_multipart
from emotion_llama.serve.uploads import StoredFile, UploadStore
from emotion_llama.serve.workspace import dir_size, remove_tree

__all__ = [
    "SNIFF_BYTES",
    "ApiError",
    "FilePart",
    "Form",
    "StoredFile",
    "UploadStore",
    "check_url",
    "check_video_file",
    "decode_data_url",
    "dir_size",
    "display_name",
    "download",
    "forbidden",
    "host_allowed",
    "read_multipart",
    "remove_tree",
    "resolve_local",
    "resolve_roots",
    "sniff_container",
    "too_large",
]
