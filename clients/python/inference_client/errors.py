"""Typed errors: one class per HTTP status the services use, each carrying the service's code and message."""

from __future__ import annotations

import email.utils
import time


class InferenceClientError(Exception):
    """Base class of every error this package raises."""


class ConfigurationError(InferenceClientError, ValueError):
    """The client was built without what it needs (no URL, no workers)."""


class ConnectionFailed(InferenceClientError):
    """The service could not be reached, or the connection broke before an answer came."""

    code = "connection_failed"

    def __init__(self, message: str, *, url: str | None = None):
        super().__init__(message)
        self.message = message
        self.url = url


class RequestTimedOut(ConnectionFailed):
    """No answer within the client's timeout."""

    code = "client_timeout"


class NoWorkerAvailable(InferenceClientError):
    """Every worker of a pool stayed out of service for longer than the pool waits."""

    code = "no_worker_available"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ServiceError(InferenceClientError):
    """The service answered with an error: ``{"error": {"code", "message"}}`` and an HTTP status."""

    status = 0

    def __init__(self, status: int, code: str, message: str, *, retry_after: float | None = None,
                 url: str | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, from the Retry-After header
        self.url = url


class BadRequest(ServiceError):
    """400: the input was malformed (bad image, bad audio, unknown option, ...)."""


class Unauthorized(ServiceError):
    """401: the API key is missing or wrong."""


class NotFound(ServiceError):
    """404: no such route (a URL pointing at the wrong service?)."""


class PayloadTooLarge(ServiceError):
    """413: too many bytes, inputs, labels, pixels or seconds of audio."""


class UnsupportedMedia(ServiceError):
    """415: a format the service does not decode (SVG, PDF, an image sent as audio, ...)."""


class RateLimited(ServiceError):
    """429: the queue is full (overloaded) or the client exceeded RATE_LIMIT; see ``retry_after``."""


class ServerError(ServiceError):
    """500 (and other 5xx without a class of their own): the request failed on the service."""


class Unavailable(ServiceError):
    """502/503: the service is loading, broken or being replaced; see ``retry_after``."""


class GatewayTimeout(ServiceError):
    """504: the request waited longer than the service's REQUEST_TIMEOUT_S for the model."""


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Unauthorized, 404: NotFound, 413: PayloadTooLarge,
              415: UnsupportedMedia, 429: RateLimited, 502: Unavailable, 503: Unavailable, 504: GatewayTimeout}
# Worth sending again (to the same or another instance): load shedding and instances going away.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_response(status: int, body: bytes, headers, url: str | None = None) -> ServiceError:
    """The typed error for an HTTP error answer; falls back to ``http_<status>`` for non-JSON bodies."""
    import json

    code, message = f"http_{status}", ""
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        # Not our JSON: a proxy's or Cloud Run's own page. Keep its start so the cause stays visible.
        message = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ServiceError)
    return cls(status, code, message, retry_after=parse_retry_after(headers.get("Retry-After")), url=url)
