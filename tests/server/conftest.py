"""A CLIP server (real gunicorn, embedded demo model) shared by the server's integration tests."""

from __future__ import annotations

import pytest

from tests.conftest import run_service


@pytest.fixture(scope="session")
def clip_service(tmp_path_factory):
    """``python -m server`` on loopback with the demo model, once per test session."""
    env = {"CLIP_MODEL": "demo", "WEB_THREADS": "16", "MAX_WAIT_MS": "20", "MAX_IMAGE_PIXELS": "20000000",
           "MAX_INPUTS": "16",
           "CALLBACK_SECRET": "dev-secret", "CALLBACK_ALLOWED_HOSTS": "localhost:9000"}  # README callback examples
    with run_service("server", env, tmp_path_factory.mktemp("clip-server")) as running:
        yield running
