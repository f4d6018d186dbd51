"""What the fault matrix (bench/faults.py) drives: services in their own process groups, callback
jobs and their deliveries, and the real dependencies it stops and starts (redis-server).

Everything runs on loopback; services are started as deployed (``python -m server|worker``, real
gunicorn) with the fake models, whose faults core/model/fake_faults.py stages.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from bench.harness import ROOT, free_port
from tests.callback_receiver import Receiver
from tests.media import wav_bytes

SECRET = "faults-secret"
READY_TIMEOUT_S = 60.0


@dataclass
class Outcome:
    """One row of the matrix: what was accepted, what ended, what was lost, and whether the row holds."""

    fault: str
    accepted: int
    ended: int
    lost: int
    worst_s: float
    holds: bool
    note: str = ""


class Service:
    """``python -m PACKAGE`` (gunicorn) on a free loopback port, in its own process group."""

    def __init__(self, package: str, env: dict[str, str], log_dir: Path, port: int | None = None):
        self.package = package
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{package}-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", package], cwd=ROOT,
                                            env={**os.environ, "PORT": str(self.port), "PYTHONUNBUFFERED": "1",
                                                 **env},
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Wait for the first /health 200; returns the seconds it took."""
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.package} exited:\n{self.logs()[-3000:]}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"{self.package} not ready in {timeout_s} s:\n{self.logs()[-3000:]}")
            time.sleep(0.05)

    def logs(self) -> str:
        """What the service printed so far."""
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        """The pids of the gunicorn worker processes (the master's children)."""
        try:
            return [child.pid for child in psutil.Process(self.process.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        """Resident bytes of the whole process tree."""
        from bench.harness import tree_rss

        return tree_rss(self.process.pid)

    def kill_tree(self) -> None:
        """SIGKILL every process of the service at once: an instance lost."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 20 s), if it still runs."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def callback_env(receiver: Receiver, store: str, **extra: str) -> dict[str, str]:
    """Settings for a service that accepts callback jobs for ``receiver`` and keeps them in ``store``."""
    return {"CALLBACK_SECRET": SECRET, "CALLBACK_ALLOWED_HOSTS": receiver.host, "JOB_STORE_URI": store,
            "JOB_LEASE_S": "2", "CALLBACK_BACKOFF_S": "0.2", "LOG_LEVEL": "INFO", **extra}


def whisper_env(receiver: Receiver, store: str, **extra: str) -> dict[str, str]:
    """The fake Whisper worker, each batch taking a while, so that jobs are in flight when faults hit."""
    return callback_env(receiver, store, **{"WHISPER_MODEL": "fake", "FAKE_BATCH_DELAY_S": "0.3", "MAX_BATCH_SIZE": "1",
                                            "ASYNC_WORKERS": "2", "WEB_THREADS": "8", **extra})


def recording(n: int) -> bytes:
    """A distinct 2 s recording (one chunk) for job ``n``."""
    return wav_bytes(2, pitch=0.03 + n / 97)


@dataclass
class Jobs:
    """Callback jobs submitted to a service, and what the receiver got for them."""

    receiver: Receiver
    accepted_at: dict[str, float] = field(default_factory=dict)  # job_id -> time.monotonic()
    inputs: dict[str, int] = field(default_factory=dict)  # job_id -> recording number
    ended_at: dict[str, float] = field(default_factory=dict)

    def submit(self, url: str, n: int, path: str = "/transcribe") -> requests.Response:
        """POST recording ``n`` with a callback URL; a 202 is recorded as accepted."""
        answer = requests.post(url + path, files={"audio": (f"{n}.wav", recording(n))},
                               data={"callback_url": self.receiver.url(f"/job{n}")}, timeout=30)
        if answer.status_code == 202:
            job_id = answer.json()["job_id"]
            self.accepted_at[job_id] = time.monotonic()
            self.inputs[job_id] = n
        return answer

    def bodies(self) -> dict[str, list[dict]]:
        """Every 2xx delivery's body, by job id (verified signatures only)."""
        found: dict[str, list[dict]] = {}
        for got in self.receiver.accepted():
            if got.signature_ok:
                found.setdefault(got.headers["X-Job-Id"], []).append(json.loads(got.body))
        return found

    def wait(self, timeout_s: float) -> None:
        """Wait until every accepted job has a delivery (or the time is up), noting when each ended."""
        give_up = time.monotonic() + timeout_s
        while time.monotonic() < give_up:
            for job_id in self.bodies():
                self.ended_at.setdefault(job_id, time.monotonic())
            if set(self.accepted_at) <= set(self.ended_at):
                return
            time.sleep(0.05)

    def worst_s(self) -> float:
        """The longest time from a 202 to its job's first delivery."""
        return max((self.ended_at[j] - self.accepted_at[j] for j in self.ended_at if j in self.accepted_at),
                   default=0.0)

    def outcome(self, fault: str, expected: dict[int, dict] | None = None, note: str = "") -> Outcome:
        """The row: every accepted job delivered (and, given ``expected``, each exactly as the synchronous answer)."""
        bodies = self.bodies()
        ended = [job_id for job_id in self.accepted_at if job_id in bodies]
        wrong = []
        if expected is not None:
            for job_id in ended:
                want = {**expected[self.inputs[job_id]], "job_id": job_id, "status": "succeeded"}
                if any(body != want for body in bodies[job_id]):
                    wrong.append(job_id)
        lost = len(self.accepted_at) - len(ended)
        if wrong:
            note = f"{len(wrong)} callbacks differ from the synchronous answer; " + note
        return Outcome(fault, len(self.accepted_at), len(ended), lost, round(self.worst_s(), 1),
                       lost == 0 and not wrong and bool(self.accepted_at), note.strip("; "))


def synchronous_answers(url: str, numbers) -> dict[int, dict]:
    """The synchronous /transcribe body of each recording."""
    return {n: requests.post(url + "/transcribe", files={"audio": (f"{n}.wav", recording(n))}, timeout=60).json()
            for n in numbers}


class Redis:
    """redis-server on a free loopback port, no persistence; stop() and start() on the same port."""

    def __init__(self, log_dir: Path):
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed (scripts/install-system-deps.sh)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start (again) and wait for PING."""
        log = open(self.log_dir / f"redis-{self.port}.log", "ab")
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no"],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Stop it (its data is gone: no persistence, like a failed-over Memorystore without replicas)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def scratch() -> Path:
    """A fresh directory for logs and stores."""
    return Path(tempfile.mkdtemp(prefix="faults-"))


class Emulators:
    """The Cloud Storage emulator (gcp-storage-emulator) and the Pub/Sub emulator (gcloud), on loopback,
    started the way the tests start them (tests/emulators.py); ``env`` points a service at both."""

    PROJECT = "faults-project"

    def __init__(self, log_dir: Path):
        from tests.emulators import PubSub, _start  # the suite's own starters
        from tests.emulators import free_port as emulator_port

        gcloud = shutil.which("gcloud")
        if not gcloud or not shutil.which("java"):
            raise RuntimeError("the Pub/Sub emulator needs gcloud (google-cloud-cli-pubsub-emulator) and java")
        storage_port, pubsub_port = emulator_port(), emulator_port()
        self.storage = _start([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                               "--port", str(storage_port), "--in-memory"],
                              f"http://127.0.0.1:{storage_port}/storage/v1/b", log_dir / "storage-emulator.log")
        (log_dir / "pubsub").mkdir()
        try:
            self.pubsub = _start([gcloud, "beta", "emulators", "pubsub", "start",
                                  f"--host-port=127.0.0.1:{pubsub_port}", f"--data-dir={log_dir / 'pubsub'}"],
                                 f"http://127.0.0.1:{pubsub_port}/", log_dir / "pubsub-emulator.log",
                                 env={"CLOUDSDK_CONFIG": str(log_dir / "gcloud"), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
                                 timeout_s=90)
        except Exception:
            from tests.emulators import _stop

            _stop(self.storage)
            raise
        from tests.emulators import Emulator

        self.env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{storage_port}",
                    "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{pubsub_port}", "NO_GCE_CHECK": "true"}
        self.topics = PubSub(Emulator(f"http://127.0.0.1:{pubsub_port}", f"127.0.0.1:{pubsub_port}",
                                      log_dir / "pubsub-emulator.log"), self.PROJECT)

    def bucket(self) -> str:
        """A new bucket on the storage emulator."""
        import uuid

        name = f"faults-{uuid.uuid4().hex[:10]}"
        answer = requests.post(f"{self.env['STORAGE_EMULATOR_HOST']}/storage/v1/b?project={self.PROJECT}",
                               json={"name": name}, timeout=10)
        answer.raise_for_status()
        return name

    def stop(self) -> None:
        """Stop both."""
        from tests.emulators import _stop

        _stop(self.pubsub)
        _stop(self.storage)
