"""Fixtures of the compose tests: docker-compose.yml's cpu profile, up, with the offline models.

Marked ``compose``: `make test-compose` runs them (after building the CPU images); `make test`
and CI skip them (they run containers of several GB).
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests
import yaml

from tests.compose.engine import built_image, container_port, find_engine, offline_model_variables, services
from tests.conftest import free_port

PROFILE = "cpu"


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    found = find_engine(tmp_path_factory.mktemp("engine"))
    if found is None:
        pytest.fail("neither `docker compose` (with an engine) nor podman + podman-compose is installed: "
                    "apt-get install podman runc buildah; podman-compose comes with requirements/dev.txt")
    return found


class Stack:
    """The cpu profile, up: each service's base URL on a free loopback port of this run."""

    def __init__(self, engine, project: str, override, env: dict):
        self.engine, self.project, self.override, self.env = engine, project, override, env
        self.services = services(PROFILE)
        self.urls: dict[str, str] = {}

    def compose(self, *args: str, **kwargs):
        return self.engine.run(*args, project=self.project, files=(self.override,), env=self.env, **kwargs)

    def containers(self, service: str | None = None) -> list[str]:
        """Names of this project's containers, running or not (both compose tools set these labels)."""
        labels = [f"label=com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"label=com.docker.compose.service={service}")
        filters = [arg for label in labels for arg in ("--filter", label)]
        return self.engine.container("ps", "-a", *filters, "--format", "{{.Names}}").stdout.split()

    def container_name(self, service: str) -> str:
        """The one container compose started for ``service``."""
        names = self.containers(service)
        assert len(names) == 1, f"{service}: containers {names}"
        return names[0]

    def wait_healthy(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        for service, url in self.urls.items():
            while True:
                try:
                    if requests.get(url + "/health", timeout=5).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    logs = self.engine.container("logs", self.container_name(service), check=False)
                    raise AssertionError(f"{service} not healthy in {timeout_s} s:\n{logs.stdout[-3000:]}"
                                         f"{logs.stderr[-3000:]}")
                time.sleep(1)


@pytest.fixture(scope="module")
def stack(engine, tmp_path_factory):
    """``compose --profile cpu up -d`` of the built CPU images, host ports moved to free loopback ones."""
    scratch = tmp_path_factory.mktemp("compose")
    chosen = services(PROFILE)
    for service in chosen.values():  # the compose file's image names for what `make images` built
        built = built_image(service)
        if engine.container("image", "inspect", built, check=False).returncode != 0:
            pytest.fail(f"{built} is not built: run `make test-compose` (it builds the CPU images first)")
        engine.container("tag", built, service["image"])
    # Host ports of this run: the file's fixed ones (8080, 5002) may be taken on a shared machine.
    ports = {name: free_port() for name in chosen}
    override = scratch / "ports.yml"
    override.write_text(yaml.safe_dump({"services": {
        name: {"ports": [f"127.0.0.1:{ports[name]}:{container_port(service)}"]} for name, service in chosen.items()}})
        .replace("ports:", "ports: !override"))
    running = Stack(engine, f"composetest{uuid.uuid4().hex[:8]}", override, offline_model_variables(chosen))
    running.urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        running.compose("--profile", PROFILE, "up", "-d", "--no-build", timeout=600)
        running.wait_healthy()
        yield running
    finally:
        running.compose("--profile", PROFILE, "down", "-v", timeout=300, check=False)
