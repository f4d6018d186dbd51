"""Optional API key: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; /health stays open."""

from __future__ import annotations

import hmac

from flask import Flask, request

from core.errors import Unauthorized

OPEN_PATHS = frozenset({"/health"})
# A Pub/Sub push subscription cannot add headers (its Authorization carries the OIDC token), so the
# event routes also take the key as ?token=KEY in the push endpoint URL; request logs omit queries.
TOKEN_PATHS = ("/events/",)


def presented_key() -> str | None:
    """The key the client sent, from either header (or ?token= on the event routes), or None."""
    if request.path.startswith(TOKEN_PATHS) and "token" in request.args:
        return request.args["token"]
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("X-API-Key")


def install_api_key(app: Flask, api_key: str | None) -> None:
    """Require ``api_key`` on every route except OPEN_PATHS (no-op when the key is unset)."""
    if not api_key:
        return
    expected = api_key.encode()

    @app.before_request
    def _require_api_key():
        if request.path in OPEN_PATHS:
            return None
        key = presented_key()
        # compare_digest takes time independent of where the strings differ (no timing oracle).
        if key is None or not hmac.compare_digest(key.encode(), expected):
            raise Unauthorized("missing or invalid API key: send 'Authorization: Bearer KEY' "
                               "or 'X-API-Key: KEY'")
        return None
