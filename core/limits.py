"""Request size limits and per-client rate limits (flask-limiter)."""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from core.auth import OPEN_PATHS
from core.settings import CoreSettings

# Non-file multipart fields (texts, labels, options) are small; werkzeug keeps them in memory.
MAX_FORM_FIELD_BYTES = 1024 * 1024
MAX_FORM_PARTS = 1000


def install_body_limits(app: Flask, settings: CoreSettings) -> None:
    """413 for bodies over MAX_REQUEST_MB, checked by werkzeug before the body is parsed."""
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_FORM_FIELD_BYTES
    app.config["MAX_FORM_PARTS"] = MAX_FORM_PARTS


def install_rate_limits(app: Flask, settings: CoreSettings) -> Limiter | None:
    """Per-client-address limits from RATE_LIMIT; /health is exempt so probes never trip it."""
    if not settings.rate_limit:
        return None
    limiter = Limiter(
        get_remote_address,  # the real client once ProxyFix has read X-Forwarded-For
        app=app,
        default_limits=[settings.rate_limit],
        default_limits_exempt_when=lambda: request.path in OPEN_PATHS,
        storage_uri=settings.rate_limit_storage_uri,
        headers_enabled=True,  # X-RateLimit-* and Retry-After on 429
        strategy="moving-window",
    )
    app.extensions["rate_limiter"] = limiter
    return limiter
