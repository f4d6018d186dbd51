"""GET /health: 200 only when the model is loaded, warm and its batcher thread is serving.

It is Cloud Run's startup probe, so it must tell the truth: 503 while loading, after a failed
load, when the batcher thread died, when a batch has hung, or when the last batches all failed.

The body a caller without a key sees is minimal: ``status``, ``service`` and, when not ok, a
``reason`` code. Model, batching and counters come with a valid API key (or when no key is
configured, minus file paths); the raw failure text only with a key, and always in the log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flask import Flask, current_app, jsonify

from core.errors import Reason
from core.web.auth import has_valid_key
from core.web.openapi import HEALTH_SCHEMA, json_content, operation

HealthCheck = Callable[[], "tuple[bool, Reason | None, dict]"]

# Detail fields that name files on the instance or carry raw exception text: never in an
# unauthenticated body.
PATH_FIELDS = frozenset({"weights", "model_dir", "checkpoint", "path", "last_error", "reason_detail"})


def _without_paths(details: dict) -> dict:
    """Details minus file paths and raw failure text, at any depth."""
    return {key: _without_paths(value) if isinstance(value, dict) else value
            for key, value in details.items() if key not in PATH_FIELDS}


def health_body(ok: bool, reason: Reason | None, details: dict, service: str, *, keyed: bool,
                open_service: bool) -> dict:
    """The /health body for a caller with a valid key, for an open service, or for the public."""
    body = {"status": "ok" if ok else "unavailable", "service": service}
    if reason:
        body["reason"] = reason.code
    if keyed:
        body.update(details)
        if reason:
            body["reason_detail"] = reason.text
    elif open_service:
        body.update(_without_paths(details))
    return body


def install_health(app: Flask, check: HealthCheck, service: str, properties: Mapping[str, dict] | None = None) -> None:
    """Register /health backed by ``check`` (usually ``ModelRunner.health``); ``properties`` are the
    service's own detail fields for the schema (the CLIP server's ``preprocessing``)."""
    app.extensions["health_check"] = check
    app.extensions["service_name"] = service
    schema = {**HEALTH_SCHEMA, "properties": {**HEALTH_SCHEMA["properties"], **(properties or {})}}

    @app.get("/health")
    @operation("Readiness: 200 when the model serves, 503 while loading or broken",
               responses={200: ("Ready.", json_content(schema)),
                          503: ("Not ready; see reason and Retry-After.", json_content(schema))})
    def health():
        ok, reason, details = check()
        keyed = has_valid_key(current_app)
        open_service = not current_app.extensions.get("api_keys")
        response = jsonify(health_body(ok, reason, details, service, keyed=keyed, open_service=open_service))
        response.status_code = 200 if ok else 503
        if not ok:
            response.headers["Retry-After"] = "5"
        response.headers["Cache-Control"] = "no-store"
        return response
