"""Shared fixtures: GPU skipping, free ports, and a real gunicorn server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from scripts.services import load as load_services
from tests.callback_receiver import receiver  # noqa: F401  (shared fixture)
from tests.emulators import bucket, pubsub_emulator, storage_emulator  # noqa: F401  (shared fixtures)

ROOT = Path(__file__).resolve().parent.parent


# Every service of the template: the packages of services.toml (one Declaration in <package>/app.py
# each); tests that must cover them all (the configuration page, the OpenAPI fuzzing) read this.
APP_PACKAGES = tuple(service["package"] for service in load_services().values())


def cuda_available() -> bool:
    """True when torch sees a CUDA device (GPU tests skip otherwise)."""
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def pytest_collection_modifyitems(config, items):
    # Container tests build and run the images (minutes, gigabytes): only when asked for by marker.
    # The fault matrix's heavier rows stop and start real dependencies (a minute or more): on demand.
    for marker, target in (("images", "make test-images` (after `make images`)"), ("compose", "make test-compose`"),
                           ("faults", "make faults` (or pytest -m faults)")):
        if marker not in (config.getoption("-m") or ""):
            skip = pytest.mark.skip(reason=f"{marker} test: run `{target}")
            for item in items:
                if marker in item.keywords:
                    item.add_marker(skip)
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _write_queued_logs() -> None:
    logs = sys.modules.get("core.web.logs")  # not imported by tests that never build an app
    if logs is not None:
        logs.flush_logs()


# A phase's queued log lines are written before pytest stops capturing it (trylast: innermost, so
# inside the capture plugin's wrapper), not to the terminal or the next test's output.
@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_setup(item):
    yield
    _write_queued_logs()


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item):
    yield
    _write_queued_logs()


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    _write_queued_logs()


@pytest.fixture
def capsys(capsys):
    """pytest's capsys, but ``readouterr`` first waits for queued log lines to reach stdout.

    core/web/logs.py writes log lines on a thread of its own, so a line logged during a request can
    still be queued when the response is back; tests that read the log wait for it here.
    """
    from core.web.logs import flush_logs

    read = capsys.readouterr

    def readouterr():
        flush_logs()
        return read()

    capsys.readouterr = readouterr
    return capsys


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningService:
    """A service started with ``python -m <package>`` (real gunicorn) on loopback."""

    def __init__(self, process: subprocess.Popen, url: str, log_path: Path):
        self.process = process
        self.url = url
        self.log_path = log_path

    def logs(self) -> str:
        """Everything the service wrote to stdout/stderr so far."""
        return self.log_path.read_text(errors="replace")


@contextmanager
def run_service(package: str, env: dict[str, str], tmp_path: Path, ready_timeout_s: float = 120.0,
                expect_ready: bool = True):
    """Start ``python -m package`` with ``env`` and wait for /health 200 (or just for HTTP)."""
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), "PYTHONUNBUFFERED": "1", **env}
    log_path = tmp_path / f"{package}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", package], cwd=ROOT, env=full_env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    service = RunningService(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{package} exited with {process.returncode}:\n{service.logs()}")
            try:
                response = requests.get(service.url + "/health", timeout=2)
                if response.status_code == 200 or not expect_ready:
                    break
            except (requests.ConnectionError, requests.Timeout):
                # Refused or slow: still starting (three workers loading models share two cores).
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{package} not ready after {ready_timeout_s} s:\n{service.logs()}")
            time.sleep(0.2)
        yield service
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


def wait_until(predicate, timeout_s: float = 30.0, interval_s: float = 0.05):
    """Poll ``predicate`` until truthy; returns its value or raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError("condition not met in time")


@pytest.fixture(scope="session")
def textembed_models_dir(tmp_path_factory) -> str:
    """MODELS_DIR with all-MiniLM-L6-v2 baked by its own bake command (offline: the PyPI package's files)."""
    folder = tmp_path_factory.mktemp("textembed-models")
    subprocess.run([sys.executable, "-m", "textembed.bake"], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "MODELS_DIR": str(folder)})
    return str(folder)
