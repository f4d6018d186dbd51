"""GET /livez: answered by gunicorn's main loop while every request thread is busy, and 503 once
the model thread is dead or a batch hangs (so Cloud Run's liveness probe replaces the instance)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from core.web.liveness import answer_probe, probe_request_length
from server.backends.fake import FakeClipBackend
from tests.conftest import run_service, wait_until
from tests.core.test_operations import make_app

PROBE = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: GoogleHC/1.0\r\n\r\n"


def stalled_upload(url: str) -> socket.socket:
    """A request whose body never finishes: it holds one gunicorn thread until the socket closes."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 b"Content-Length: 100000\r\n\r\n--b\r\n")
    return sock


@pytest.mark.integration
def test_livez_is_answered_while_every_request_thread_is_busy(tmp_path):
    with run_service("server", {"CLIP_MODEL": "fake", "WEB_THREADS": "2", "API_KEY": "k"}, tmp_path) as service:
        assert requests.get(service.url + "/livez", timeout=5).json() == {"status": "ok"}
        stalled = [stalled_upload(service.url) for _ in range(2)]
        try:
            time.sleep(0.5)  # both threads are now inside /embed, reading a body that never comes
            with pytest.raises(requests.Timeout):
                requests.get(service.url + "/health", timeout=1.5)  # queued behind them: proof they are busy
            for _ in range(5):
                started = time.monotonic()
                live = requests.get(service.url + "/livez", timeout=2)
                assert live.status_code == 200 and live.json() == {"status": "ok"}
                assert time.monotonic() - started < 0.5
            assert requests.head(service.url + "/livez", timeout=2).status_code == 200
        finally:
            for sock in stalled:
                sock.close()
        wait_until(lambda: requests.get(service.url + "/health", timeout=5).status_code == 200, 10)
        # Ordinary requests still go to the threads, on fresh and kept-alive connections alike.
        with requests.Session() as session:
            for _ in range(3):
                ok = session.post(service.url + "/embed", data={"text": "x"}, headers={"X-API-Key": "k"}, timeout=10)
                assert ok.status_code == 200 and ok.json()["dim"] == 64
            assert session.get(service.url + "/livez", timeout=5).status_code == 200


class DyingModel(FakeClipBackend):
    """Kills the model thread on the first batch after warm-up (a bug that escapes the batcher)."""

    armed = False

    def forward(self, kind, batch):
        if self.armed:
            raise SystemExit("model thread gone")
        return super().forward(kind, batch)


class HangingModel(FakeClipBackend):
    armed = False
    release = threading.Event()

    def forward(self, kind, batch):
        if self.armed:
            self.release.wait(30)
        return super().forward(kind, batch)


def probe_over_socket(app) -> bytes:
    """Send a probe through a real socket pair and let answer_probe (the worker's path) answer it."""
    server, client = socket.socketpair()
    with server, client:
        client.sendall(PROBE)
        time.sleep(0.05)
        head = server.recv(4096, socket.MSG_PEEK)
        assert answer_probe(server, head, app)
        return client.recv(4096)


@pytest.mark.unit
def test_livez_fails_once_the_model_thread_is_dead():
    app = make_app(DyingModel)
    client = app.test_client()
    assert client.get("/livez").status_code == 200
    assert probe_over_socket(app).startswith(b"HTTP/1.1 200 OK")
    app.extensions["model_runner"].backend.armed = True
    client.post("/embed", data={"text": "x"})
    wait_until(lambda: app.extensions["model_runner"].batcher.state == "dead", 5)
    dead = client.get("/livez")
    assert dead.status_code == 503 and dead.get_json() == {"status": "unavailable", "reason": "inference_thread_dead"}
    answer = probe_over_socket(app)
    assert answer.startswith(b"HTTP/1.1 503") and b'"reason":"inference_thread_dead"' in answer


@pytest.mark.unit
def test_livez_fails_while_a_batch_hangs_and_recovers_after():
    app = make_app(HangingModel)
    runner = app.extensions["model_runner"]
    runner.batcher.stuck_after_s = 0.2
    runner.batcher.stats.longest_batch_s = 0.0
    runner.backend.armed = True
    client = app.test_client()
    threading.Thread(target=client.post, args=("/embed",), kwargs={"data": {"text": "x"}}, daemon=True).start()
    wait_until(lambda: client.get("/livez").status_code == 503, 5)
    assert client.get("/livez").get_json()["reason"] == "batch_hung"
    HangingModel.release.set()
    wait_until(lambda: client.get("/livez").status_code == 200, 5)


@pytest.mark.unit
def test_livez_stays_ok_while_the_model_loads():
    gate = threading.Event()

    class SlowLoad(FakeClipBackend):
        def load(self):
            gate.wait(10)
            super().load()

    app = make_app(SlowLoad, wait_ready=False)
    client = app.test_client()
    assert client.get("/health").status_code == 503
    assert client.get("/livez").status_code == 200  # the startup probe, not liveness, waits for loading
    gate.set()


@pytest.mark.unit
def test_only_complete_livez_requests_are_taken_by_the_main_loop():
    assert probe_request_length(PROBE) == len(PROBE)
    assert probe_request_length(b"GET /livez?x=1 HTTP/1.1\r\n\r\nGET /embed") == len(b"GET /livez?x=1 HTTP/1.1\r\n\r\n")
    assert probe_request_length(b"GET /livez HTTP/1.1\r\nHost: x\r\n") is None  # incomplete: a thread reads it
    assert probe_request_length(b"GET /livezz HTTP/1.1\r\n\r\n") is None
    assert probe_request_length(b"POST /livez HTTP/1.1\r\n\r\n") is None
    assert probe_request_length(b"GET /livez HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc") is None
