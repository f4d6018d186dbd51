"""Fixtures of the container tests: the built images, running (make images first)."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from bench import containers
from scripts.services import load as load_services
from tests.conftest import free_port

API_KEY = "image-test-key"
# Every service of services.toml, by its table name: the tests that apply to every image run on each.
SERVICES = load_services()


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
def started():
    """``started(name)``: the running container of a service of services.toml, started on first use and
    shared by the module's tests (one each, stopped at the module's end)."""
    stack, ready = ExitStack(), {}

    def get(name: str) -> containers.Container:
        if name not in ready:
            generator = running(containers.IMAGES[name])
            ready[name] = next(generator)
            stack.callback(generator.close)
        return ready[name]

    with stack:
        yield get


@pytest.fixture(scope="module")
def clip_container(started):
    return started("clip")


@pytest.fixture(scope="module")
def worker_container(started):
    return started("whisper")


@pytest.fixture(scope="module")
def textembed_container(started):
    return started("textembed")
