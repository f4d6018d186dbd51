"""A callback job's request, written down before the 202, so that any process can run it again.

``capture`` turns the current request into bytes: method, path, query string, form fields and
uploaded files (multipart / urlencoded), or the raw body (JSON, a raw image), plus the callback
URL. ``replay`` runs the same route on those bytes in another process: Flask builds the request
again and calls the view, and the view's ``answer`` (core/deferred/async_jobs.py) sees that it
is replaying, so it runs the work and hands the callback body back instead of queueing a job.
Nothing above the routes changes: every route that takes ``callback_url`` is durable as it is.

Format: one line of JSON (the header, with each part's length), then the parts' bytes in order.
The checks that ran before the 202 (API key, rate limit, body size, the callback URL guard)
are not run again: the request was accepted once.
"""

from __future__ import annotations

import contextvars
import io
import json
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, request
from werkzeug.datastructures import MultiDict

# Set by core/web/json_body.py on a JSON body that names a callback_url: JSON is read without
# Flask's cache (large bodies), so the raw bytes are kept only where a job may need them again.
RAW_BODY_KEY = "inference.raw_body"
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")

_replaying: contextvars.ContextVar[bool] = contextvars.ContextVar("replaying_job", default=False)


@dataclass
class SpooledRequest:
    """What ``replay`` needs to run a route again."""

    callback_url: str
    method: str
    path: str
    query_string: str
    content_type: str | None
    form: list[list[str]] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)  # field, filename, content_type, length
    body: bytes = b""
    file_data: list[bytes] = field(default_factory=list)


class Replayed:
    """What ``answer`` returns to ``replay``: the callback body of the work it ran."""

    def __init__(self, body: dict):
        self.body = body


def replaying() -> bool:
    """True inside ``replay``: ``answer`` runs the work instead of accepting a job."""
    return _replaying.get()


def _file_bytes(upload) -> bytes:
    stream = upload.stream
    if isinstance(stream, io.BytesIO):
        return stream.getvalue()  # the whole upload, position untouched
    position = stream.tell()
    stream.seek(0)
    data = stream.read()
    stream.seek(position)
    return data


def capture(callback_url: str) -> bytes:
    """The current request as spool bytes (a copy of its inputs; the request is not disturbed)."""
    header: dict[str, Any] = {"callback_url": callback_url, "method": request.method, "path": request.path,
                              "query_string": request.query_string.decode("latin-1"),
                              "content_type": request.headers.get("Content-Type")}
    parts: list[bytes] = []
    if request.mimetype in FORM_TYPES:
        header["form"] = [[key, value] for key, value in request.form.items(multi=True)]
        header["files"] = []
        for name, upload in request.files.items(multi=True):
            data = _file_bytes(upload)
            header["files"].append({"field": name, "filename": upload.filename,
                                    "content_type": upload.content_type, "length": len(data)})
            parts.append(data)
    else:
        body = request.environ.get(RAW_BODY_KEY)
        body = request.get_data(cache=True) if body is None else body
        header["body_length"] = len(body)
        parts.insert(0, body)
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + b"".join(parts)


def load(blob: bytes) -> SpooledRequest:
    """Parse spool bytes back (ValueError when they are not a spooled request)."""
    line, _, rest = blob.partition(b"\n")
    header = json.loads(line)
    spooled = SpooledRequest(header["callback_url"], header["method"], header["path"], header["query_string"],
                             header.get("content_type"), header.get("form", []), header.get("files", []))
    offset = 0
    if "body_length" in header:
        spooled.body = rest[:header["body_length"]]
        offset = header["body_length"]
    for entry in spooled.files:
        spooled.file_data.append(rest[offset:offset + entry["length"]])
        offset += entry["length"]
    if offset != len(rest):
        raise ValueError("spooled request is truncated or has trailing bytes")
    return spooled


def replay(app: Flask, spooled: SpooledRequest) -> dict:
    """Run the spooled request's route again in this process; returns the callback body."""
    if spooled.files or spooled.form or (spooled.content_type or "").startswith(FORM_TYPES):
        data = MultiDict(spooled.form)
        for entry, content in zip(spooled.files, spooled.file_data):
            data.add(entry["field"], (io.BytesIO(content), entry["filename"], entry["content_type"]))
        # EnvironBuilder encodes the fields again (multipart with a fresh boundary, or urlencoded).
        mimetype = (spooled.content_type or "").split(";")[0].strip()
        options: dict[str, Any] = {"data": data, "content_type": mimetype or None}
    else:
        options = {"data": spooled.body, "content_type": spooled.content_type}
    with app.test_request_context(spooled.path, method=spooled.method, query_string=spooled.query_string,
                                  **options):
        token = _replaying.set(True)
        try:
            answered = app.view_functions[request.url_rule.endpoint](**(request.view_args or {}))
        finally:
            _replaying.reset(token)
    if not isinstance(answered, Replayed):
        raise RuntimeError(f"{spooled.method} {spooled.path} did not run as a job when replayed")
    return answered.body
