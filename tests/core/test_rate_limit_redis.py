"""RATE_LIMIT_STORAGE_URI=redis://...: two instances share one client's budget (a real redis-server)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from tests.conftest import free_port
from tests.core.test_http_core import make_client

pytestmark = pytest.mark.integration


def start_redis(tmp_path, *extra: str, port: int | None = None):
    """A real redis-server on loopback -> (process, port)."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (make setup installs it)")
    port = port or free_port()
    server = subprocess.Popen([executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path), *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.05)
    return server, port


@pytest.fixture
def redis_url(tmp_path):
    server, port = start_redis(tmp_path)
    yield f"redis://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


def test_two_instances_share_the_budget_through_redis(redis_url):
    first = make_client(rate_limit="3/minute", rate_limit_storage_uri=redis_url)
    second = make_client(rate_limit="3/minute", rate_limit_storage_uri=redis_url)
    statuses = [client.post("/embed", data={"text": "x"}).status_code for client in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429]


def test_redis_going_away_fails_open_and_its_password_never_reaches_the_log(tmp_path, capsys, monkeypatch):
    import core.web.limits

    monkeypatch.setattr(core.web.limits, "STORAGE_RETRY_S", 0.3)  # retry Redis sooner than the 5 s default
    server, port = start_redis(tmp_path, "--requirepass", "hunter2")
    try:
        client = make_client(rate_limit="2/minute", rate_limit_storage_uri=f"redis://:hunter2@127.0.0.1:{port}/0")
        statuses = [client.post("/embed", data={"text": "x"}).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]  # the password works: counted in Redis
    finally:
        server.kill()
        server.wait(timeout=10)
    # Redis is gone: served unlimited (fail open), never a 500, and the probes stay green.
    assert [client.post("/embed", data={"text": "x"}).status_code for _ in range(3)] == [200, 200, 200]
    assert client.get("/health").status_code == 200
    # Redis is back (empty): after the retry pause, limiting resumes and the log says so.
    server = start_redis(tmp_path, "--requirepass", "hunter2", port=port)[0]
    try:
        time.sleep(0.4)
        assert [client.post("/embed", data={"text": "x"}).status_code for _ in range(3)] == [200, 200, 429]
    finally:
        server.kill()
        server.wait(timeout=10)
    out = capsys.readouterr().out
    assert "hunter2" not in out and "redis://:***@127.0.0.1" in out
    assert out.count("unreachable") == 1 and "reachable again" in out


def test_a_storage_failure_while_writing_the_rate_limit_headers_is_no_500(tmp_path):
    # Redis going away between the check and the X-RateLimit headers (found by `make faults`):
    # flask-limiter 4 registers its own header hook, so the guard must replace it to be reached.
    server, port = start_redis(tmp_path)
    try:
        client = make_client(rate_limit="1000/minute", rate_limit_storage_uri=f"redis://127.0.0.1:{port}/0")
        limiter = client.application.extensions["rate_limiter"]
        assert client.post("/embed", data={"text": "hi"}).headers.get("X-RateLimit-Limit") == "1000"
        check = limiter._check_request_limit

        def check_then_storage_dies(*args, **kwargs):
            check(*args, **kwargs)
            server.kill()
            server.wait()

        limiter._check_request_limit = check_then_storage_dies  # noqa: SLF001 - the race, made certain
        client.application.before_request_funcs[None] = [
            check_then_storage_dies if getattr(f, "__self__", None) is limiter else f
            for f in client.application.before_request_funcs[None]]
        answer = client.post("/embed", data={"text": "hi"})
        assert answer.status_code == 200 and "X-RateLimit-Limit" not in answer.headers
    finally:
        server.kill()
