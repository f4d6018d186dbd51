"""The Whisper worker's OpenAPI document: valid 3.1, one entry per route (fuzzed: tests/test_openapi_fuzz.py)."""

from __future__ import annotations

import threading

import pytest
import requests
from openapi_spec_validator import validate

from core.web.openapi import routes, undeclared
from worker.app import create_app
from worker.backends.whisper_backend import WhisperBackend
from worker.settings import WorkerSettings

pytestmark = pytest.mark.integration


def document_routes(document: dict) -> set[tuple[str, str]]:
    """(path, method) of every operation in an OpenAPI document."""
    return {(path, method) for path, item in document["paths"].items() for method in item}


class UrlMapOnly(WhisperBackend):
    """tiny.en that never loads: the in-process app is built only to read its Flask url_map."""

    def load(self) -> None:
        threading.Event().wait()  # stays "loading" (a daemon thread): nothing here needs the model


def test_document_is_valid_openapi_31_and_matches_the_url_map(whisper_service, tmp_path):
    # Events configured, as in whisper_service: the document lists the event routes only then.
    settings = WorkerSettings.from_env({}, whisper_model="tiny.en", log_level="ERROR", events_output=str(tmp_path))
    app = create_app(settings, backend=UrlMapOnly(settings))
    document = requests.get(whisper_service.url + "/openapi.json", timeout=10).json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document_routes(document) == routes(app)
    assert {("/v1/audio/transcriptions", "post"), ("/v1/models", "get"), ("/transcribe", "post")} <= routes(app)
    assert ("/v1/audio/translations", "post") not in routes(app)  # tiny.en cannot translate: not offered
    assert {("/events/pubsub", "post"), ("/events/storage", "post")} <= routes(app)
    assert undeclared(app) == [], "declare these routes' contracts with @core.web.openapi.operation"
    formats = document["paths"]["/transcribe"]["post"]["responses"]["200"]["content"]
    assert set(formats) == {"application/json", "text/plain", "application/x-subrip", "text/vtt"}

