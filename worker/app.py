"""The Whisper worker's app factory (gunicorn entry: ``worker.app:create_app()``)."""

from __future__ import annotations

from flask import Flask

from core.deferred.async_jobs import install_async_jobs
from core.from_storage.event_routes import install_events
from core.model.runner import ModelRunner
from core.web.app import build_app
from core.web.health import install_health
from core.web.openapi import install_openapi
from worker.backends import make_backend
from worker.events import audio_handler
from worker.openai_routes import bp as openai_bp
from worker.routes import bp
from worker.service import WhisperService
from worker.settings import WorkerSettings


def create_app(settings: WorkerSettings | None = None, backend=None) -> Flask:
    """Build the app; the model loads in the background and /health says when it is ready."""
    settings = settings or WorkerSettings.from_env()
    app = build_app(__name__, settings)
    backend = backend or make_backend(settings)
    backend.check_weights()  # a missing model fails the worker's boot at once (see server/app.py)
    runner = ModelRunner(backend, settings, name="whisper")
    app.extensions["model_runner"] = runner
    service = WhisperService(runner, settings, reserve=app.extensions["memory_budget"].reserve)
    app.extensions["whisper_service"] = service
    install_health(app, runner.health, service="whisper-worker")
    install_async_jobs(app, settings)
    app.register_blueprint(bp)
    app.register_blueprint(openai_bp)
    install_openapi(app, "Whisper transcription worker", "Speech to text with faster-whisper (CTranslate2).")
    install_events(app, audio_handler(service), namespace="whisper")
    app.logger.info("starting", extra={"settings": settings.public_dict()})
    runner.start()
    return app
