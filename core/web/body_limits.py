"""Body limits werkzeug does not enforce by itself: chunked bodies (JSON's own bounds: core/web/json_body.py).

Also: after a large body, freed memory goes back to the OS (``malloc_trim``).

- A chunked request (no Content-Length) is read up to MAX_REQUEST_MB + 1 byte before any route
  sees it: over the limit is 413, like a body that declared its length. Werkzeug alone silently
  cuts such a body at the limit, so the route saw half an image or empty JSON and answered 400.
"""

from __future__ import annotations

import io

from flask import Flask, g, request

from core.errors import PayloadTooLarge
from core.model.memory import release_freed_memory

_READ_CHUNK = 256 * 1024
# After a request whose body was at least this large, freed buffers are handed back to the OS:
# werkzeug and gunicorn read bodies in small pieces that land in malloc's arenas (a refused
# chunked 40 MiB body left 25 MiB behind without this; see bench/abuse_bench.py).
TRIM_AFTER_BODY_BYTES = 8 * 1024 * 1024


def install_chunked_body_limit(app: Flask, max_bytes: int) -> None:
    """Buffer chunked bodies up to ``max_bytes`` (413 above) and give them a Content-Length."""

    @app.before_request
    def _buffer_chunked_body():
        environ = request.environ
        chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        if not chunked or not environ.get("wsgi.input_terminated"):
            return
        stream = environ["wsgi.input"]
        parts, total = [], 0
        while True:
            part = stream.read(min(_READ_CHUNK, max_bytes + 1 - total))
            if not part:
                break
            parts.append(part)
            total += len(part)
            g.large_body = total >= TRIM_AFTER_BODY_BYTES
            if total > max_bytes:
                limit_mb = max_bytes / 1024 / 1024
                raise PayloadTooLarge(f"the request body is over {limit_mb:g} MiB (MAX_REQUEST_MB)",
                                      code="payload_too_large")
        body = b"".join(parts)
        # From here on the request looks like one that declared its length.
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = False
        request.__dict__.pop("stream", None)  # werkzeug caches the stream it wrapped

    @app.teardown_request
    def _trim_after_large_body(_error):
        if g.get("large_body") or (request.content_length or 0) >= TRIM_AFTER_BODY_BYTES:
            release_freed_memory()
