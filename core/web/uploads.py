"""The request class both apps use: multipart bodies parsed by ``core.web.multipart``, in memory.

werkzeug's own parser holds the GIL for a regular expression and a Python event loop per 64 KB
and spools a file part over 500 KB to a temporary file (a create, write, seek and read of the
whole upload) before the route reads it back into bytes. ``core.web.multipart`` splits the body with
``bytes.find`` into ``io.BytesIO`` parts. Every body is already capped by MAX_REQUEST_MB before it
is parsed (``core.web.limits.install_body_limits``; chunked bodies by ``core.web.body_limits``), so keeping
the parts in memory holds no more than the cap allows. ``upload_bytes`` then hands a part's bytes
to the route without copying them again.
"""

from __future__ import annotations

import io

from flask import Request
from werkzeug.datastructures import FileStorage
from werkzeug.formparser import FormDataParser

from core.web.multipart import malformed, parse_multipart


class MultipartFormParser(FormDataParser):
    """werkzeug's form parser with ``core.web.multipart`` for multipart bodies (URL-encoded ones as before)."""

    def _parse_multipart(self, stream, mimetype, content_length, options):
        boundary = options.get("boundary", "")
        if not boundary or not boundary.isascii():
            raise malformed("Content-Type has no boundary parameter (or a non-ASCII one)")
        form, files = parse_multipart(stream, boundary.encode("ascii"), max_field_bytes=self.max_form_memory_size,
                                      max_parts=self.max_form_parts, cls=self.cls)
        return stream, form, files


class InMemoryUploadsRequest(Request):
    """Flask's Request with multipart bodies parsed by ``core.web.multipart``."""

    form_data_parser_class = MultipartFormParser


def upload_bytes(upload: FileStorage) -> bytes:
    """All bytes of an uploaded part; an in-memory part's own buffer, not a copy of it."""
    stream = upload.stream
    if isinstance(stream, io.BytesIO) and stream.tell() == 0:
        # getvalue() trims the buffer to size and returns it as is; read() copied all of it
        # (3 ms and a second copy in memory for a 20 MB upload).
        return stream.getvalue()
    return upload.read()
