"""Real services for the client tests: a demo CLIP server, fake-model CLIP servers, Whisper workers (tiny.en)."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

from server.demo.shapes import draw_shape
from tests.conftest import RunningService, run_service
from tests.media import SENTENCES, speak

API_KEY = "client-test-key"
# The clients keep connections alive; a short graceful timeout lets each test session's services stop fast.
QUICK_STOP = {"GRACEFUL_TIMEOUT_S": "1"}
# One CTranslate2 thread each: three workers share this machine's two cores in the fan-out tests.
WORKER_ENV = {"WHISPER_MODEL": "tiny.en", "WHISPER_CPU_THREADS": "1", "WEB_THREADS": "8", "MAX_WAIT_MS": "50",
              "API_KEY": API_KEY, **QUICK_STOP}


def start_together(stack: ExitStack, managers: list) -> list[RunningService]:
    """Enter several ``run_service`` managers at once (their model loads overlap); ``stack`` stops them."""
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
    for manager, future in zip(managers, futures):
        if future.exception() is None:
            stack.push(manager)
    return [future.result() for future in futures]


def kill(service: RunningService, sig: int = signal.SIGKILL) -> None:
    """Signal the service's whole process group (gunicorn master and workers)."""
    os.killpg(service.process.pid, sig)


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> list[Path]:
    """The eight test sentences spoken by espeak-ng (3-4 s each)."""
    root = tmp_path_factory.mktemp("client-clips")
    return [speak(text, root / f"sentence{n}.wav") for n, text in enumerate(SENTENCES)]


@pytest.fixture(scope="session")
def red_circle(tmp_path_factory) -> Path:
    """A JPEG of a red circle: the demo CLIP model knows it."""
    path = tmp_path_factory.mktemp("client-images") / "red-circle.jpg"
    draw_shape("red", "circle", np.random.default_rng(7), size=(320, 240)).save(path, quality=92)
    return path


@pytest.fixture(scope="session")
def clip_server(tmp_path_factory):
    """``python -m server`` with the embedded demo model, behind an API key."""
    env = {"CLIP_MODEL": "demo", "WEB_THREADS": "8", "MAX_WAIT_MS": "10", "API_KEY": API_KEY, **QUICK_STOP}
    with run_service("server", env, tmp_path_factory.mktemp("client-clip")) as running:
        yield running


@pytest.fixture(scope="module")
def fake_servers(tmp_path_factory):
    """Two CLIP servers with the fake (hash) model: real gunicorn and HTTP, no model cost."""
    env = {"CLIP_MODEL": "fake", "WEB_THREADS": "4", **QUICK_STOP}
    with ExitStack() as stack:
        yield start_together(stack, [run_service("server", env, tmp_path_factory.mktemp("fake-clip"))
                                     for _ in range(2)])


@pytest.fixture(scope="module")
def rate_limited_server(tmp_path_factory):
    """A fake-model CLIP server allowing one request per second per client (429 + Retry-After beyond)."""
    env = {"CLIP_MODEL": "fake", "WEB_THREADS": "4", "RATE_LIMIT": "1/second", **QUICK_STOP}
    with run_service("server", env, tmp_path_factory.mktemp("limited-clip")) as running:
        yield running


@pytest.fixture(scope="session")
def workers(tmp_path_factory):
    """Three Whisper workers (tiny.en) behind an API key, started together.

    Tests use the first two; the third is test_transcribe_cli.py's to kill.
    """
    with ExitStack() as stack:
        yield start_together(stack, [run_service("worker", WORKER_ENV, tmp_path_factory.mktemp("client-worker"),
                                                 ready_timeout_s=180) for _ in range(3)])
