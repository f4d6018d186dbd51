"""Log lines are written by a thread of their own: requests never wait on stdout, no line is lost."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest

from core.gunicorn_conf import _worker_exit
from core.web.logs import JsonFormatter, configure_logging, flush_logs, stop_logging
from server.app import create_app
from server.settings import ServerSettings
from tests.conftest import ROOT, wait_until

pytestmark = pytest.mark.unit


class BlockedStream(io.StringIO):
    """A stdout whose write() waits until ``opened`` is set (a log agent that stopped reading)."""

    def __init__(self):
        super().__init__()
        self.opened = threading.Event()

    def write(self, text: str) -> int:
        self.opened.wait(30)  # bounded: a broken test fails instead of hanging the suite
        return super().write(text)


@pytest.fixture
def blocked_stdout():
    """A BlockedStream, opened again (and logging restarted) after the test.

    The test itself puts it in sys.stdout: pytest's capture resets sys.stdout after fixture setup.
    """
    flush_logs()  # earlier tests' lines go to their own stdout, not this one
    stream = BlockedStream()
    yield stream
    stream.opened.set()
    flush_logs()
    configure_logging(logging.getLevelName(logging.getLogger().level))  # running again after a stop


def lines_of(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_a_request_finishes_while_stdout_is_blocked(blocked_stdout, monkeypatch):
    monkeypatch.setattr(sys, "stdout", blocked_stdout)
    settings = ServerSettings.from_env({}, clip_model="fake", log_level="INFO")
    client = create_app(settings).test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 10)
    answers = []

    def request_thread():
        answers.append(client.post("/embed", data={"text": "hello"}).status_code)
        logging.getLogger("tests.request").info("after the request")

    thread = threading.Thread(target=request_thread)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and answers == [200]
    assert blocked_stdout.getvalue() == ""  # its lines are still waiting for stdout, not the request

    blocked_stdout.opened.set()
    flush_logs()
    lines = lines_of(blocked_stdout)
    (request_line,) = [line for line in lines if line.get("httpRequest", {}).get("requestUrl") == "/embed"]
    assert request_line["httpRequest"]["status"] == 200 and request_line["batch_sizes"] == [1]
    # In order. The app's loader thread may log its "ready" line anywhere among them: not ours.
    ours = [line["message"] for line in lines if line["logger"] in (request_line["logger"], "tests.request")]
    assert ours[-2:] == ["POST /embed 200", "after the request"]


@pytest.mark.parametrize("stop", [stop_logging, lambda: _worker_exit(None, SimpleNamespace())],
                         ids=["stop_logging (atexit)", "gunicorn worker_exit"])
def test_every_queued_line_is_written_when_logging_stops(blocked_stdout, monkeypatch, stop):
    monkeypatch.setattr(sys, "stdout", blocked_stdout)
    configure_logging("INFO")
    log = logging.getLogger("tests.backlog")
    for n in range(500):
        log.info("line %d", n)  # each returns at once: stdout is blocked
    assert blocked_stdout.getvalue() == ""
    threading.Timer(0.2, blocked_stdout.opened.set).start()
    stop()

    def ours():  # an app built by an earlier test may still log from its own threads meanwhile
        return [line["message"] for line in lines_of(blocked_stdout) if line["logger"] == "tests.backlog"]

    assert ours() == [f"line {n}" for n in range(500)]
    log.info("after the stop")  # written directly now: nothing is left in a queue nobody reads
    assert ours()[-1] == "after the stop"


def test_lines_still_queued_at_exit_reach_stdout():
    code = ("import logging; from core.web.logs import configure_logging; configure_logging('INFO'); "
            "log = logging.getLogger('tests.exit'); [log.info('line %d', n) for n in range(3000)]")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    messages = [json.loads(line)["message"] for line in out.stdout.splitlines()]
    assert messages == [f"line {n}" for n in range(3000)]


def test_queued_lines_keep_extras_arguments_and_the_traceback(monkeypatch):
    configure_logging("INFO")
    flush_logs()
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    log = logging.getLogger("tests.fields")
    records = []
    seen = logging.Handler()
    seen.emit = records.append
    log.addHandler(seen)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed on %s", "photo.jpg", extra={
                "httpRequest": {"requestMethod": "POST", "status": 500}, "batch_sizes": [3, 1]})
    finally:
        log.removeHandler(seen)
    flush_logs()
    (line,) = stream.getvalue().splitlines()
    assert line == JsonFormatter().format(records[0])  # the same line the formatter alone writes
    entry = json.loads(line)
    assert entry["message"] == "failed on photo.jpg" and entry["severity"] == "ERROR"
    assert entry["httpRequest"] == {"requestMethod": "POST", "status": 500} and entry["batch_sizes"] == [3, 1]
    assert entry["stack_trace"].startswith("Traceback") and "ValueError: boom" in entry["stack_trace"]
