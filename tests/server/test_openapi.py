"""The CLIP server's OpenAPI document: valid 3.1, one entry per route (fuzzed: tests/test_openapi_fuzz.py)."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from core.web.openapi import routes, undeclared
from server.app import create_app
from server.backends.fake import FakeClipBackend
from server.models import resolve_spec
from server.settings import ServerSettings
from tests.server.test_api import make_client


def document_routes(document: dict) -> set[tuple[str, str]]:
    """(path, method) of every operation in an OpenAPI document."""
    return {(path, method) for path, item in document["paths"].items() for method in item}


@pytest.mark.unit
def test_document_is_valid_openapi_31_and_matches_the_url_map():
    app, client = make_client()
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    validate(document)  # openapi-spec-validator picks the 3.1 validator from "openapi"
    assert document["openapi"].startswith("3.1")
    assert document_routes(document) == routes(app)
    assert {("/v1/embeddings", "post"), ("/v1/models", "get"), ("/embed", "post")} <= routes(app)
    assert undeclared(app) == [], "declare these routes' contracts with @core.web.openapi.operation"
    embeddings = document["paths"]["/v1/embeddings"]["post"]
    assert embeddings["requestBody"]["content"]["application/json"]["schema"]["properties"]["modality"]
    assert document["paths"]["/health"]["get"]["security"] == []  # open, as core.web.auth leaves it


@pytest.mark.unit
def test_a_route_added_later_appears_in_the_document():
    """The document is built from the url_map, so a new route cannot be left out of it."""
    settings = ServerSettings.from_env({}, clip_model="fake", log_level="WARNING")
    app = create_app(settings, backend=FakeClipBackend(settings, resolve_spec(settings)))

    @app.get("/v1/added-late")
    def added_late():
        """Added after the app was built."""
        return {}

    document = app.test_client().get("/openapi.json").get_json()
    assert ("/v1/added-late", "get") in document_routes(document)
    assert undeclared(app) == ["/v1/added-late"]

