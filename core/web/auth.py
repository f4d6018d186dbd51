"""Optional API keys: ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``; the probes stay open.

Cloud Run IAM puts a Google ID token in ``Authorization`` (or in ``X-Serverless-Authorization``,
which leaves ``Authorization`` free). A correct key in either header is enough, so a caller can
pass IAM with the ID token and this check with ``X-API-Key`` at the same time.

``API_KEY`` may hold several keys separated by commas (one per client, or old and new during a
rotation); rate limits then count each key apart (see core/web/limits.py).
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, g, request

from core.errors import Unauthorized

# Probes and the health check: Cloud Run calls them without credentials.
OPEN_PATHS = frozenset({"/health", "/livez"})
# A Pub/Sub push subscription cannot add headers (its Authorization carries the OIDC token), so the
# event routes also take the key as ?token=KEY in the push endpoint URL; request logs omit queries.
TOKEN_PATHS = ("/events/",)


def configured_keys(api_key: str | None) -> tuple[str, ...]:
    """The keys in API_KEY (comma-separated; blanks ignored)."""
    return tuple(part.strip() for part in (api_key or "").split(",") if part.strip())


def presented_keys() -> list[str]:
    """Every credential the client sent that could be an API key, X-API-Key first."""
    keys = []
    if request.path.startswith(TOKEN_PATHS) and request.args.get("token"):
        keys.append(request.args["token"])
    header_key = request.headers.get("X-API-Key", "").strip()
    if header_key:
        keys.append(header_key)
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer " and authorization[7:].strip():
        keys.append(authorization[7:].strip())
    return keys


def matching_key(expected: tuple[str, ...]) -> str | None:
    """The configured key one of the presented credentials equals, or None."""
    found = None
    for key in presented_keys():
        for candidate in expected:
            # compare_digest takes time independent of where the strings differ (no timing
            # oracle); every pair is compared so the timing does not reveal which one matched.
            if hmac.compare_digest(key.encode(), candidate.encode()) and found is None:
                found = candidate
    return found


def key_fingerprint(key: str) -> str:
    """A short stable hash of a key: safe to use as a rate-limit bucket or in logs."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def request_key_fingerprint() -> str | None:
    """The fingerprint of the valid key this request carried (set by the auth check), or None."""
    return g.get("api_key_fingerprint")


def has_valid_key(app: Flask) -> bool:
    """True when the request carries one of the configured keys (False when none is configured)."""
    expected = app.extensions.get("api_keys", ())
    return bool(expected) and matching_key(expected) is not None


def install_api_key(app: Flask, api_key: str | None, open_paths: frozenset[str] = OPEN_PATHS) -> None:
    """Require one of the ``api_key`` keys on every route except ``open_paths`` (no-op when unset)."""
    expected = configured_keys(api_key)
    app.extensions["api_keys"] = expected
    if not expected:
        return

    @app.before_request
    def _require_api_key():
        key = matching_key(expected)
        if key is not None:
            g.api_key_fingerprint = key_fingerprint(key)
            return None
        if request.path in open_paths:
            return None
        raise Unauthorized("missing or invalid API key: send 'X-API-Key: KEY' or "
                           "'Authorization: Bearer KEY'")
