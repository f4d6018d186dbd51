"""The Whisper worker's app factory (gunicorn entry: ``worker.app:create_app()``)."""

from __future__ import annotations

from flask import Flask

from core.backend import ModelRunner
from core.health import install_health
from core.http import build_app
from worker.fake_backend import FAKE_MODEL, FakeWhisperBackend
from worker.routes import bp
from worker.service import WhisperService
from worker.settings import WorkerSettings
from worker.whisper_backend import WhisperBackend


def create_app(settings: WorkerSettings | None = None, backend=None) -> Flask:
    """Build the app; the model loads in the background and /health says when it is ready."""
    settings = settings or WorkerSettings.from_env()
    app = build_app(__name__, settings)
    if backend is None:
        backend = FakeWhisperBackend(settings) if settings.whisper_model == FAKE_MODEL else WhisperBackend(settings)
    backend.check_weights()  # a missing model fails the worker's boot at once (see server/app.py)
    runner = ModelRunner(backend, settings, name="whisper")
    app.extensions["model_runner"] = runner
    service = WhisperService(runner, settings)
    app.extensions["whisper_service"] = service
    app.extensions["transcriber"] = service.transcriber
    install_health(app, runner.health, service="whisper-worker")
    app.register_blueprint(bp)
    app.logger.info("starting", extra={"settings": settings.public_dict()})
    runner.start()
    return app
