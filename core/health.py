"""GET /health: 200 only when the model is loaded, warm and its batcher thread is serving.

It is Cloud Run's startup probe, so it must tell the truth: 503 while loading, after a failed
load, when the batcher thread died, when a batch has hung, or when the last batches all failed.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, jsonify

from core.openapi import HEALTH_SCHEMA, json_content, operation

HealthCheck = Callable[[], "tuple[bool, str | None, dict]"]


def install_health(app: Flask, check: HealthCheck, service: str) -> None:
    """Register /health backed by ``check`` (usually ``ModelRunner.health``)."""

    @app.get("/health")
    @operation("Readiness: 200 when the model serves, 503 while loading or broken",
               responses={200: ("Ready.", json_content(HEALTH_SCHEMA)),
                          503: ("Not ready; see reason and Retry-After.", json_content(HEALTH_SCHEMA))})
    def health():
        ok, reason, details = check()
        body = {"status": "ok" if ok else "unavailable", "service": service, **details}
        if reason:
            body["reason"] = reason
        response = jsonify(body)
        response.status_code = 200 if ok else 503
        if not ok:
            response.headers["Retry-After"] = "5"
        response.headers["Cache-Control"] = "no-store"
        return response
