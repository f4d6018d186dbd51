"""One exception family for both services and the single handler that renders it.

Every error a client can see is a ``ServiceError`` subclass; the whole status map lives here.
Werkzeug's own HTTP errors (404, 405, 413 from MAX_CONTENT_LENGTH, 429 from flask-limiter)
are converted to the same JSON shape, and anything unexpected becomes a logged 500.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

# Flask is imported only by the HTTP rendering below: the runner and the batcher raise these
# exceptions at every door (callback, event, batch job) and stay free of the web framework.

log = logging.getLogger("core.errors")


class ServiceError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a human message."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.retry_after = retry_after


class InvalidInput(ServiceError):
    status, code = 400, "invalid_input"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMedia(ServiceError):
    status, code = 415, "unsupported_media_type"


class Overloaded(ServiceError):
    """The inference queue is full: shed load now rather than time out later."""

    status, code = 429, "overloaded"


class InferenceFailed(ServiceError):
    status, code = 500, "inference_failed"


class NotConfigured(ServiceError):
    """A feature this deployment has not set up: no retry can help until its configuration changes.

    404, as for any route the service does not offer (its /openapi.json leaves it out too); not 503,
    which reads as "not ready, retry later" (Eventarc Advanced retries 503, never 404), and not a
    5xx, which would count against the error-rate alerts and read as a fault of the server.
    """

    status, code = 404, "not_configured"


@dataclass(frozen=True)
class Reason:
    """Why the model cannot serve: a stable code for clients and probes, a sentence for the log.

    The batcher names the code where it knows the cause, so nothing downstream parses sentences.
    Codes: loading, load_failed, inference_thread_dead, stopped, batch_hung, batches_failing,
    unavailable.
    """

    code: str
    text: str

    def __str__(self) -> str:
        return self.text


class NotReady(ServiceError):
    """503: the model is loading or broken; ``reason`` is the code a client may see."""

    status, code = 503, "not_ready"

    def __init__(self, message: str, *, reason: str = "unavailable", retry_after: int | None = None):
        super().__init__(message, retry_after=retry_after)
        self.reason = reason


class OutOfMemory(ServiceError):
    """503: the accelerator ran out of memory even for this input alone; retrying later may fit."""

    status, code = 503, "out_of_memory"


class DeadlineExceeded(ServiceError):
    status, code = 504, "timeout"


class ModelNotBaked(RuntimeError):
    """Start-up error, not an HTTP one: the configured weights are not in MODELS_DIR.

    The message names the missing path and the bake command; the worker fails to boot with it.
    """


# Werkzeug errors raised outside our code (routing, body limits, rate limits) -> our codes.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_body(code: str, message: str) -> dict:
    """The one JSON error shape: ``{"error": {"code", "message"}}``."""
    return {"error": {"code": code, "message": message}}


def _render(status: int, code: str, message: str, retry_after: int | None = None):
    from flask import g, has_request_context, jsonify

    if has_request_context():
        g.error_code = code  # the rejection metric's reason label
    response = jsonify(error_body(code, message))
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(int(retry_after))
    return response


# What a client reads for a server-side failure: the internal text (exception names, paths,
# library messages) goes to the log line, which carries the request's trace id.
PUBLIC_MESSAGES = {
    "internal_error": "internal server error",
    "inference_failed": "the model failed on the batch that held this request; retry, and report "
                        "the time if it persists",
}
# ``SomethingError:`` / ``SomethingException`` as written by f"{type(err).__name__}: {err}".
_CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z0-9_]*(?:Error|Exception|Exit|Interrupt)\b:?\s*")


def public_message(err: ServiceError) -> str:
    """The message a client may see for ``err``: no exception class names or internal text."""
    if err.status == 500:
        return PUBLIC_MESSAGES.get(err.code, PUBLIC_MESSAGES["internal_error"])
    if isinstance(err, NotReady):
        return f"the service is not ready ({err.reason}); retry later"
    return _CLASS_NAME.sub("", err.message)


def register_error_handlers(app: Flask) -> None:
    """Install the single error handler for ServiceError, HTTP errors and crashes."""
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(ServiceError)
    def _service_error(err: ServiceError):
        # 503/504/429 are load and readiness signals the request line already records;
        # a 500 is a bug or a broken model and deserves an ERROR entry of its own.
        if err.status == 500:
            log.error("request failed: %s", err.message, extra={"error_code": err.code})
        return _render(err.status, err.code, public_message(err), err.retry_after)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        status = err.code or 500
        message = err.description or err.name
        response = _render(status, _HTTP_CODES.get(status, "http_error"), message)
        # Keep headers werkzeug computed (Allow on 405, Retry-After/X-RateLimit on 429).
        for name, value in err.get_response().headers.items():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error")
        return _render(500, "internal_error", "internal server error")
