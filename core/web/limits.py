"""Request size limits and per-client rate limits (flask-limiter).

A client is its API key (hashed) when it sent a valid one, else its address: every user behind
one backend shares an address, not a key. One budget covers every route unless
RATE_LIMIT_PER_ROUTE is set. When the counter storage (Redis) cannot be reached, requests pass
(fail open) with a warning and a metric, or get 503 with RATE_LIMIT_FAIL_CLOSED; never a 500.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import HTTPException

from core.errors import ServiceError
from core.settings import CoreSettings
from core.web import metrics
from core.web.auth import OPEN_PATHS, key_fingerprint, matching_key
from core.web.logs import mask_uri

log = logging.getLogger("core.web.limits")

# Non-file multipart fields (texts, labels, options) are small; werkzeug keeps them in memory.
MAX_FORM_FIELD_BYTES = 1024 * 1024
MAX_FORM_PARTS = 1000
# After the storage failed, skip it for this long: an unreachable Redis must not add a connect
# timeout to every request.
STORAGE_RETRY_S = 5.0
# Connect/read timeouts for a Redis storage: a black-holed address must fail fast, not hang.
REDIS_TIMEOUT_S = 0.5
LIMITS_EXEMPT_PATHS = OPEN_PATHS | {"/metrics"}


class RateLimitUnavailable(ServiceError):
    status, code = 503, "rate_limit_unavailable"


def install_body_limits(app: Flask, settings: CoreSettings) -> None:
    """413 for bodies over MAX_REQUEST_MB, checked by werkzeug before the body is parsed."""
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_FORM_FIELD_BYTES
    app.config["MAX_FORM_PARTS"] = MAX_FORM_PARTS


def client_identity() -> str:
    """The rate-limit bucket of this request: ``key:<sha256 prefix>`` or ``ip:<address>``."""
    key = matching_key(current_app.extensions.get("api_keys", ()))
    if key is not None:
        return f"key:{key_fingerprint(key)}"
    return f"ip:{get_remote_address()}"  # the real client once ProxyFix has read X-Forwarded-For


class GuardedLimiter(Limiter):
    """A Limiter whose storage failures fail open (warning + metric) or closed (503), never 500."""

    def __init__(self, *args, fail_closed: bool = False, storage_label: str = "", **kwargs):
        self.fail_closed = fail_closed
        self.storage_label = storage_label
        self._down_until = 0.0
        self._down = False  # one warning per outage, one line when it ends
        self._down_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _check_request_limit(self, callable_name=None, in_middleware=True) -> None:
        if request.path in LIMITS_EXEMPT_PATHS:
            return None  # probes and scrapes never depend on the storage
        if time.monotonic() < self._down_until:
            return self._storage_unavailable(None)
        try:
            super()._check_request_limit(callable_name=callable_name, in_middleware=in_middleware)
        except ServiceError:
            raise
        except HTTPException:  # the 429 itself (RateLimitExceeded)
            raise
        except Exception as err:  # noqa: BLE001 - any storage failure: connection, timeout, auth
            with self._down_lock:
                first = not self._down
                self._down = True
                self._down_until = time.monotonic() + STORAGE_RETRY_S
            return self._storage_unavailable(err if first else None)
        if self._down:
            self._down = False
            log.warning("rate-limit storage %s reachable again; limiting resumed", self.storage_label)
        return None

    def _storage_unavailable(self, err: Exception | None) -> None:
        metrics.rate_limit_storage_error(self.fail_closed)
        if err is not None:
            log.warning("rate-limit storage %s unreachable (%s); %s for %g s", self.storage_label,
                        mask_uri(str(err)), "refusing requests" if self.fail_closed else "not limiting",
                        STORAGE_RETRY_S, extra={"rate_limit_storage_error": type(err).__name__})
        if self.fail_closed:
            raise RateLimitUnavailable("rate limiting is unavailable; retry shortly", retry_after=5)

    def init_app(self, app: Flask) -> None:
        """flask-limiter 4 registers ``partial(Limiter.__inject_headers, self)``, which no override
        reaches: put the guarded one below in its place."""
        super().init_app(app)
        hooks = app.after_request_funcs.setdefault(None, [])
        for n, hook in enumerate(hooks):
            if getattr(hook, "func", None) is Limiter._Limiter__inject_headers and hook.args == (self,):
                hooks[n] = self._Limiter__inject_headers

    def _Limiter__inject_headers(self, response):  # noqa: N802 - overrides the name-mangled hook
        # The X-RateLimit headers read the storage again; a failure there must not turn a
        # served request into a 500.
        if time.monotonic() < self._down_until:
            return response
        try:
            response = super()._Limiter__inject_headers(response)
        except Exception as err:  # noqa: BLE001
            log.warning("rate-limit headers skipped: %s", mask_uri(str(err)))
            return response
        # flask-limiter truncates the seconds to the window's reset: under a second left gives
        # "Retry-After: 0", and a client that obeys it retries at once into the same 429.
        retry_after = response.headers.get("Retry-After", "")
        if response.status_code == 429 and retry_after.lstrip("-").isdigit() and int(retry_after) < 1:
            response.headers["Retry-After"] = "1"
        return response


def _storage_options(uri: str) -> dict:
    if uri.startswith(("redis://", "rediss://", "redis+")):
        return {"socket_connect_timeout": REDIS_TIMEOUT_S, "socket_timeout": REDIS_TIMEOUT_S}
    return {}


def install_rate_limits(app: Flask, settings: CoreSettings) -> Limiter | None:
    """Per-client limits from RATE_LIMIT; the probes and /metrics are exempt so they never trip it."""
    if not settings.rate_limit:
        return None
    per_route = getattr(settings, "rate_limit_per_route", False)
    exempt = lambda: request.path in LIMITS_EXEMPT_PATHS  # noqa: E731
    limits = {"default_limits": [settings.rate_limit], "default_limits_exempt_when": exempt} if per_route else {
        "application_limits": [settings.rate_limit], "application_limits_exempt_when": exempt}
    limiter = GuardedLimiter(
        client_identity,
        app=app,
        storage_uri=settings.rate_limit_storage_uri,
        storage_options=_storage_options(settings.rate_limit_storage_uri),
        headers_enabled=True,  # X-RateLimit-* and Retry-After on 429
        strategy="moving-window",
        fail_closed=getattr(settings, "rate_limit_fail_closed", False),
        storage_label=mask_uri(settings.rate_limit_storage_uri),
        **limits,
    )
    app.extensions["rate_limiter"] = limiter
    return limiter
