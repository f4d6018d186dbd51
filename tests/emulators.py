"""Real Google Cloud emulators on loopback, started by the tests: Cloud Storage and Pub/Sub.

The fixtures are session-scoped (each emulator starts once) and skip with the reason when the tool
is not installed. ``storage_emulator`` sets ``STORAGE_EMULATOR_HOST`` in this process's
environment, so ``core.from_storage.storage`` and services started by ``run_service`` both use it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

# Tests talk to loopback only: google-auth must never probe the metadata server (169.254.169.254)
# when some code path looks for default credentials. Read when google.auth is first imported.
os.environ.setdefault("NO_GCE_CHECK", "true")


@dataclass
class Emulator:
    """A running emulator: its base URL and log file."""

    url: str
    host_port: str
    log_path: Path

    def logs(self) -> str:
        """What the emulator printed so far."""
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    """An unused TCP port on loopback (tests.conftest imports this module, so not from there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(argv: list[str], probe: str, log_path: Path, env: dict | None = None, timeout_s: float = 60.0):
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            requests.get(probe, timeout=1)
            return process
        except (requests.ConnectionError, requests.Timeout):  # refused or slow: still starting
            pass
        if time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(f"{argv[0]} did not answer in {timeout_s} s:\n{log_path.read_text()}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # gcloud starts java as a child: stop the whole group
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def storage_emulator(tmp_path_factory):
    """``gcp-storage-emulator`` (PyPI) in memory on loopback; STORAGE_EMULATOR_HOST points at it."""
    pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator is not installed (requirements/dev.txt)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("storage-emulator") / "emulator.log"
    process = _start([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                      "--port", str(port), "--in-memory"], url + "/storage/v1/b", log_path)
    # Only this variable: GOOGLE_CLOUD_PROJECT would change other tests' log trace names.
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        yield Emulator(url, f"127.0.0.1:{port}", log_path)
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        _stop(process)


@pytest.fixture
def bucket(storage_emulator) -> str:
    """A fresh bucket on the storage emulator; returns its name."""
    from core.from_storage.storage import gcs_client

    name = f"test-{uuid.uuid4().hex[:12]}"
    gcs_client().create_bucket(name)
    return name


class PubSub:
    """The Pub/Sub emulator's REST API (the same paths as pubsub.googleapis.com/v1)."""

    def __init__(self, emulator: Emulator, project: str = "test-project"):
        self.emulator = emulator
        self.base = f"{emulator.url}/v1/projects/{project}"
        self.project = project

    def create_topic(self, topic: str) -> None:
        """Create a topic."""
        requests.put(f"{self.base}/topics/{topic}", timeout=10).raise_for_status()

    def create_push_subscription(self, name: str, topic: str, endpoint: str, ack_deadline_s: int = 60) -> None:
        """A push subscription delivering the topic's messages to ``endpoint``."""
        body = {"topic": f"projects/{self.project}/topics/{topic}", "pushConfig": {"pushEndpoint": endpoint},
                "ackDeadlineSeconds": ack_deadline_s}
        requests.put(f"{self.base}/subscriptions/{name}", json=body, timeout=10).raise_for_status()

    def publish(self, topic: str, data: bytes = b"", attributes: dict | None = None) -> str:
        """Publish one message; returns its message id."""
        import base64

        message = {"data": base64.b64encode(data).decode()}
        if attributes:
            message["attributes"] = attributes
        answer = requests.post(f"{self.base}/topics/{topic}:publish", json={"messages": [message]}, timeout=10)
        answer.raise_for_status()
        return answer.json()["messageIds"][0]


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory):
    """``gcloud beta emulators pubsub start`` on loopback (needs the gcloud component and Java) -> PubSub."""
    gcloud = shutil.which("gcloud")
    if not gcloud:
        pytest.skip("gcloud is not installed: the Pub/Sub emulator test needs google-cloud-cli")
    sdk_root = Path(os.path.realpath(gcloud)).parent.parent
    if not (sdk_root / "platform" / "pubsub-emulator").is_dir():
        pytest.skip(f"the gcloud Pub/Sub emulator component is not installed under {sdk_root}/platform "
                    "(apt-get install google-cloud-cli-pubsub-emulator)")
    if not shutil.which("java"):
        pytest.skip("java is not installed: the Pub/Sub emulator needs a Java runtime")
    port = free_port()
    root = tmp_path_factory.mktemp("pubsub-emulator")
    # A private gcloud configuration: the tests never read or change the user's.
    env = {"CLOUDSDK_CONFIG": str(root / "gcloud-config"), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    (root / "data").mkdir()  # gcloud writes env.yaml there and stops the emulator if it cannot
    process = _start([gcloud, "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}",
                      f"--data-dir={root / 'data'}"], f"http://127.0.0.1:{port}/", root / "emulator.log",
                     env=env, timeout_s=90)
    try:
        yield PubSub(Emulator(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", root / "emulator.log"))
    finally:
        _stop(process)
