"""Build a service's Flask app from its declaration (core/declaration.py).

The same calls in the same order for every service: shared middleware, backend (its weights
checked at once), runner, service object, /health, callback_url jobs, the app's routes, /openapi.json,
/events/*, then the model starts loading in the background. ``app.extensions`` holds
``model_runner`` (metrics, the ready line, the 503 check before a callback's 202), ``service`` and
``declaration``; nothing else needs to be remembered by an app.
"""

from __future__ import annotations

import importlib

from flask import Flask, current_app

from core.deferred.async_jobs import install_async_jobs
from core.from_storage.event_routes import install_events
from core.model.runner import ModelRunner
from core.web.app import build_app
from core.web.health import install_health
from core.web.metrics import declare_units
from core.web.openapi import install_openapi


def create_app(declaration, settings=None, backend=None) -> Flask:
    """The app of ``declaration``; the model loads in the background and /health says when it is ready."""
    settings = settings or declaration.settings.from_env()
    app = build_app(declaration.package, settings)
    backend = backend or declaration.make_backend(settings)
    # Missing weights are a configuration error: fail the worker's boot now (gunicorn then exits)
    # instead of answering 503 until the startup probe gives up minutes later.
    backend.check_weights()
    runner = ModelRunner(backend, settings, name=declaration.name)
    service = declaration.make_service(runner, settings, app.extensions["memory_budget"])
    app.extensions.update(model_runner=runner, service=service, declaration=declaration)
    declare_units(app, declaration.units)
    install_health(app, runner.health, service=declaration.service_name,
                   properties=declaration.health_properties)
    install_async_jobs(app, settings)
    for module in declaration.routes:
        app.register_blueprint(importlib.import_module(module).bp)
    install_openapi(app, declaration.title, declaration.description)
    if declaration.events is not None:
        install_events(app, declaration.events(service), namespace=declaration.name)
    app.logger.info("starting", extra={"settings": settings.public_dict()})
    runner.start()
    return app


def current_service():
    """The service object of the app handling this request (routes call it)."""
    return current_app.extensions["service"]
