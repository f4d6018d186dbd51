"""docker-compose.yml, run for real: the cpu profile up, healthy, answering, and draining on `down`.

The services and their profiles are read from the compose file; what to ask each one is read from
its own /openapi.json (a multipart /embed gets images, a JSON /embed texts, /transcribe speech). The GPU profile
cannot run without an NVIDIA GPU and its container toolkit: it is validated with `config` only.
"""

from __future__ import annotations

import io
import threading
import time

import pytest
import requests

from tests.compose.conftest import PROFILE
from tests.compose.engine import services
from tests.media import encode, photo_like, speak

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1200)]
SENTENCE = "Please send the quarterly report to Maria before Friday, and copy the whole team."


def _request_fields(url: str) -> dict[str, dict[str, set[str]]]:
    """POST routes -> request content type -> the body's fields, from the service's /openapi.json."""
    response = requests.get(url + "/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    fields = {}
    for path, operations in response.json()["paths"].items():
        content = operations.get("post", {}).get("requestBody", {}).get("content", {})
        fields[path] = {kind: set(body.get("schema", {}).get("properties", {})) for kind, body in content.items()}
    return fields


class Asker:
    """One request a service's routes call for, and the check of its answer."""

    def __init__(self, url: str, scratch):
        routes = _request_fields(url)
        self.url, self.json, self.files = url, None, []
        embed = routes.get("/embed", {})
        if "image" in embed.get("multipart/form-data", ()):  # CLIP
            # Many inputs: slow enough on the demo model to be in flight when `down` begins.
            pictures = [encode(photo_like(640, 480, seed=n)) for n in range(16)]
            self.path, self.files = "/embed", [("image", (f"{n}.jpg", data)) for n, data in enumerate(pictures)]
            self.check = lambda body: [len(v) for v in body["image_embeddings"]] == [body["dim"]] * 16
        elif "texts" in embed.get("application/json", ()):  # a text-embedding model
            self.path, self.json = "/embed", {"texts": [f"{SENTENCE} ({n})" for n in range(32)]}
            self.check = lambda body: len(body["embeddings"]) == 32
        elif "/transcribe" in routes:
            audio = speak(SENTENCE, scratch / "sentence.wav").read_bytes()
            self.path, self.files = "/transcribe", [("audio", ("sentence.wav", audio))]
            self.check = lambda body: "report" in body["text"].lower()
        else:
            raise AssertionError(f"{url}: no /embed or /transcribe this test knows among {sorted(routes)}")

    def ask(self) -> requests.Response:
        # A short connect timeout: once a container is gone, its forwarded port may drop connections.
        timeout = (5, 120)
        if self.json is not None:
            return requests.post(self.url + self.path, json=self.json, timeout=timeout)
        files = [(field, (name, io.BytesIO(data))) for field, (name, data) in self.files]
        return requests.post(self.url + self.path, files=files, timeout=timeout)


@pytest.fixture(scope="module")
def askers(stack, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("inputs")
    return {service: Asker(url, scratch) for service, url in stack.urls.items()}


def test_the_profile_has_services_to_run(stack):
    assert stack.services and set(stack.urls) == set(services(PROFILE))


def test_every_service_passes_its_own_healthcheck(stack, engine):
    for service in stack.services:
        container = stack.container_name(service)
        if engine.cli == "podman":
            # podman schedules health checks with systemd timers, which this machine has not:
            # run the check the compose file declared once, as the timer would.
            out = engine.container("healthcheck", "run", container, check=False)
            assert out.returncode == 0, f"{service}: {out.stdout}{out.stderr}"
        else:
            deadline = time.monotonic() + 120  # the first check runs one interval after the start
            while (status := engine.container("inspect", "-f", "{{.State.Health.Status}}", container)
                   .stdout.strip()) != "healthy":
                assert status == "starting" and time.monotonic() < deadline, f"{service}: {status}"
                time.sleep(2)


def test_every_service_serves_its_offline_model(stack, askers):
    for service, asker in askers.items():
        health = requests.get(stack.urls[service] + "/health", timeout=10).json()
        assert health["model"] and health["device"] == "cpu", health
        response = asker.ask()
        assert response.status_code == 200, f"{service}: {response.status_code} {response.text[:500]}"
        assert asker.check(response.json()), f"{service}: {response.text[:500]}"


def test_down_drains_in_flight_work(stack, askers):
    """Requests under way when `down` begins finish with 200; only ones started after may be refused."""
    outcomes: list[tuple[str, float, float, int | str]] = []
    stop = threading.Event()

    def client(service: str, asker: Asker):
        while not stop.is_set():
            started = time.monotonic()
            try:
                status: int | str = asker.ask().status_code
            except requests.RequestException as error:
                status = type(error).__name__
            outcomes.append((service, started, time.monotonic(), status))

    threads = [threading.Thread(target=client, args=(service, asker), daemon=True)
               for service, asker in askers.items() for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(3)  # every client has requests under way
    down_at = time.monotonic()
    stack.compose("--profile", PROFILE, "down", timeout=120)
    down_s = time.monotonic() - down_at
    stop.set()
    for thread in threads:
        thread.join(timeout=150)
    assert not stack.containers(), "down left containers behind"
    for service in askers:
        under_way = [o for o in outcomes if o[0] == service and o[1] < down_at]
        assert under_way, f"{service}: no request was sent before down"
        lost = [o for o in under_way if o[3] != 200]
        assert not lost, f"{service}: requests under way at down did not finish: {lost}"
        drained = [o for o in under_way if o[2] > down_at]
        assert drained, f"{service}: no request was in flight when down began"
    # Within each service's stop_grace_period (10 s): gunicorn finished and exited, no SIGKILL.
    grace = max(float(str(s.get("stop_grace_period", "10s")).rstrip("s")) for s in stack.services.values())
    assert down_s < grace * len(stack.services) + 30, down_s


def test_the_gpu_profile_validates(engine):
    gpu = services("gpu")
    assert gpu, "the compose file has no gpu profile"
    out = engine.run("--profile", "gpu", "config", timeout=120)
    for name, service in gpu.items():
        assert name in out.stdout
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert any(device["driver"] == "nvidia" for device in devices), name
    assert "nvidia" in out.stdout
