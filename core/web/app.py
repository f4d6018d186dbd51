"""The Flask app both services start from: errors, logs, limits, auth and proxy headers."""

from __future__ import annotations

from flask import Flask, g
from werkzeug.middleware.proxy_fix import ProxyFix

from core import request_context
from core.errors import register_error_handlers
from core.model.admission import budget_from_settings
from core.settings import CoreSettings
from core.web.auth import OPEN_PATHS, install_api_key
from core.web.body_limits import install_chunked_body_limit
from core.web.limits import install_body_limits, install_rate_limits
from core.web.liveness import install_liveness
from core.web.logs import configure_logging, install_request_logging
from core.web.metrics import install_metrics
from core.web.uploads import InMemoryUploadsRequest


def build_app(import_name: str, settings: CoreSettings) -> Flask:
    """A Flask app with the shared middleware installed; the service adds its routes."""
    configure_logging(settings.log_level)
    app = Flask(import_name)
    app.request_class = InMemoryUploadsRequest  # uploads up to MAX_REQUEST_MB stay in memory
    app.json.sort_keys = False  # keep response keys in the documented order
    app.json.compact = True
    if settings.trusted_proxies:
        # Cloud Run's front end appends the caller's address to X-Forwarded-For; rate limits
        # must key on that, not on the proxy's address.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=1)
    app.extensions["settings"] = settings
    # One budget per process for decoded inputs (images here, audio in the worker): core/model/admission.py.
    app.extensions["memory_budget"] = budget_from_settings(settings)
    register_error_handlers(app)
    install_request_context(app)  # first: every hook after it (logs, metrics) reads the context
    install_request_logging(app)
    install_metrics(app)
    install_liveness(app)
    install_body_limits(app, settings)
    install_rate_limits(app, settings)
    install_api_key(app, settings.api_key,
                    OPEN_PATHS | {"/metrics"} if settings.metrics_public else OPEN_PATHS)
    # After the key and rate checks: a refused client does not get a chunked body read first.
    install_chunked_body_limit(app, settings.max_request_bytes)
    return app


def install_request_context(app: Flask) -> None:
    """Every HTTP request opens one request context (door ``http``) and closes it at teardown."""

    @app.before_request
    def _open_request_context():
        g.request_context_token = request_context.open_context("http")

    @app.teardown_request
    def _close_request_context(_error=None):
        token = g.pop("request_context_token", None)
        if token is not None:
            request_context.close(token)
