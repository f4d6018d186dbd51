"""The CLIP embedding server's app factory (gunicorn entry: ``server.app:create_app()``)."""

from __future__ import annotations

from flask import Flask

from core.deferred.async_jobs import install_async_jobs
from core.from_storage.event_routes import install_events
from core.model.runner import ModelRunner
from core.web.app import build_app
from core.web.health import install_health
from core.web.openapi import install_openapi
from server.backends import ClipBackend, make_backend
from server.events import image_handler
from server.openai_routes import bp as openai_bp
from server.routes import bp
from server.service import ClipService
from server.settings import ServerSettings


def create_app(settings: ServerSettings | None = None, backend: ClipBackend | None = None) -> Flask:
    """Build the app; the model loads in the background and /health says when it is ready."""
    settings = settings or ServerSettings.from_env()
    app = build_app(__name__, settings)
    backend = backend or make_backend(settings)
    # Missing weights are a configuration error: fail the worker's boot now (gunicorn then
    # exits) instead of answering 503 until the startup probe gives up minutes later.
    backend.check_weights()
    runner = ModelRunner(backend, settings, name="clip")
    service = ClipService(runner, settings, memory_budget=app.extensions["memory_budget"])
    app.extensions["model_runner"] = runner
    app.extensions["clip_service"] = service
    app.extensions["label_cache"] = service.label_cache
    install_health(app, runner.health, service="clip-server")
    install_async_jobs(app, settings)
    app.register_blueprint(bp)
    app.register_blueprint(openai_bp)
    install_openapi(app, "CLIP embedding server", "Embeddings and zero-shot classification with a CLIP model.")
    install_events(app, image_handler(service), namespace="clip")
    app.logger.info("starting", extra={"settings": settings.public_dict()})
    runner.start()
    return app
