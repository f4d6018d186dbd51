"""The request class both apps use: multipart file parts are parsed into memory, never temp files.

Werkzeug spools a file part over 500 KB to a temporary file: a create, write, seek and read of
the whole upload on disk (on Cloud Run a tmpfs, so memory anyway) before the route reads it all
back into bytes. Every body is already capped by MAX_REQUEST_MB before it is parsed
(``core.limits.install_body_limits``; chunked bodies by ``core.body_limits``), so keeping the
parts in memory holds no more than the cap allows. ``upload_bytes`` then hands a part's bytes to
the route without copying them again.
"""

from __future__ import annotations

import io
from typing import IO

from flask import Request
from werkzeug.datastructures import FileStorage


class InMemoryUploadsRequest(Request):
    """Flask's Request with multipart file parts in ``io.BytesIO``."""

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        return io.BytesIO()


def upload_bytes(upload: FileStorage) -> bytes:
    """All bytes of an uploaded part; an in-memory part's own buffer, not a copy of it."""
    stream = upload.stream
    if isinstance(stream, io.BytesIO) and stream.tell() == 0:
        # getvalue() trims the buffer to size and returns it as is; read() copied all of it
        # (3 ms and a second copy in memory for a 20 MB upload).
        return stream.getvalue()
    return upload.read()
