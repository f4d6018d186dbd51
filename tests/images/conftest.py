"""Fixtures of the container tests: the built images, running (make images first)."""

from __future__ import annotations

import pytest

from bench import containers
from tests.conftest import free_port

API_KEY = "image-test-key"


def require_image(image: str) -> None:
    if not containers.available():
        pytest.fail("buildah is not usable here (root, apt-get install buildah): the container tests need it")
    if not containers.has_image(image):
        pytest.fail(f"{image} is not built: run `make images` first")


def running(image: str, env: dict | None = None):
    """A started container of ``image`` on a free port, /health 200 (generator for fixtures)."""
    require_image(image)
    port = free_port()
    with containers.Container(image) as container:
        container.start({"PORT": str(port), "API_KEY": API_KEY, **(env or {})})
        container.url = f"http://127.0.0.1:{port}"
        container.wait_healthy(container.url + "/health", timeout=300)
        yield container


@pytest.fixture(scope="module")
def clip_container():
    yield from running(containers.CLIP_IMAGE)


@pytest.fixture(scope="module")
def worker_container():
    yield from running(containers.WORKER_IMAGE)
