"""Design (b) of issue 10 as a measurement prototype: request processes feed ONE model process.

A benchmark prototype, not the product: the service still runs design (a) (one gunicorn process
per GPU with its own batcher), and nothing outside ``bench/`` imports this module. It exists so
``bench/feed_bench.py`` can measure (b) next to (a) with the simulated accelerator.

- The model process (``python -m bench.model_process SOCKET``) runs the real ``ModelRunner`` and
  ``Batcher`` with the sim backend (``CLIP_MODEL=sim:...``), then serves a
  ``multiprocessing.connection.Listener`` on a Unix socket. Each message is one batch from one
  request process: a stacked array (images in float16, as the GPU would take them). Every item
  goes to the one batcher, which merges the batches of all request processes into GPU batches of
  up to MAX_BATCH_SIZE, and the reply is the float32 vectors.
- The request processes are the normal gunicorn app (``request_app()``, WEB_WORKERS=N) with
  ``RemoteClipBackend``: the sim backend's real preprocessing, and ``forward(batch)`` sends the
  batch to the model process; the request threads wait for the vectors in ``postprocess``. So each
  request process still batches its own concurrent requests, and the model process batches across
  processes. (A first version waited inside ``forward``: each request process then had one batch
  in flight, and with two processes the model process never had two batches to merge.)

Deliberately missing (what (b) would need in production, see README "Performance"): /health that
reflects the model process, 429/504/503 carried across the socket with their codes and one
deadline per request (here the wait in ``postprocess`` has its own REQUEST_TIMEOUT_S), request
threads that fail at once, not hang, when the model process dies or restarts, and a SIGTERM drain
ordered request processes first, then the model process.
"""

from __future__ import annotations

import collections
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from multiprocessing.connection import Client, Connection, Listener

import numpy as np

from bench.harness import ROOT, python
from core.backend import ModelRunner
from core.batcher import Batcher
from server.backends.sim import SimClipBackend
from server.models import resolve_spec
from server.settings import ServerSettings

MODEL_SOCKET_ENV = "MODEL_SOCKET"  # read by the request processes only; bench-only, not a setting
CONNECT_TIMEOUT_S = 60.0


# ---- the model process -----------------------------------------------------------------------

def serve_model(socket_path: str) -> None:
    """Load and warm the sim model, then answer batches from request processes on ``socket_path``."""
    settings = ServerSettings.from_env()
    backend = SimClipBackend(settings, resolve_spec(settings))
    runner = ModelRunner(backend, settings, name="model-process").start()
    while runner.batcher.state == "starting":
        time.sleep(0.05)
    runner.ensure_ready()
    facts = {"image_spec": backend.image_spec, "dim": backend.dim, "context_length": backend.context_length}
    # The socket appears only now, after the warm-up: its existence is the bench's readiness signal.
    with Listener(socket_path, family="AF_UNIX") as listener:
        while True:
            conn = listener.accept()
            threading.Thread(target=_serve_connection, args=(runner, conn, facts), daemon=True).start()


def _serve_connection(runner: ModelRunner, conn: Connection, facts: dict) -> None:
    """One request process: batches in, vectors out in the same order, until it disconnects.

    Receiving and replying are separate threads, so a request process may have several batches
    in flight and the batcher here can merge them with other processes' batches.
    """
    conn.send(facts)
    replies: queue.SimpleQueue = queue.SimpleQueue()  # per message: its futures, or the error
    threading.Thread(target=_reply, args=(runner, conn, replies), daemon=True).start()
    while True:
        try:
            kind, dtype, shape = conn.recv()
            batch = np.frombuffer(conn.recv_bytes(), dtype=dtype).reshape(shape)
        except (EOFError, OSError):
            replies.put(None)
            return
        # One group per item, not per message: the batcher's round-robin over groups would take a
        # few items of every waiting message into each batch, so no message would finish (and be
        # answered) until several batches had run. Per item, batches take items in arrival order.
        # (Production would send each item's request with it and group by that.)
        try:
            replies.put([runner.batcher.submit(item, key=kind, timeout_s=runner.settings.request_timeout_s)
                         for item in batch])
        except Exception as err:  # noqa: BLE001 - the prototype reports any failure as text
            replies.put(err)


def _reply(runner: ModelRunner, conn: Connection, replies: queue.SimpleQueue) -> None:
    """Send each message's vectors (or its error) back, in the order the messages came."""
    with conn:
        while (futures := replies.get()) is not None:
            try:
                if isinstance(futures, Exception):
                    raise futures
                vectors = np.stack(Batcher.gather(futures, timeout_s=runner.settings.request_timeout_s))
            except Exception as err:  # noqa: BLE001 - the prototype reports any failure as text
                conn.send(f"{type(err).__name__}: {err}")
                continue
            conn.send(None)
            conn.send_bytes(np.ascontiguousarray(vectors, dtype=np.float32))


# ---- the request processes -------------------------------------------------------------------

class RemoteClipBackend(SimClipBackend):
    """Real sim preprocessing here; forward = send the batch to the model process, without waiting.

    ``forward`` returns one Future per item and ``postprocess`` (on the request thread) waits for
    it, so this process's batcher thread sends its next batch while earlier ones are still at the
    model process: batches from every request process can meet in the model process's batcher.
    """

    def load(self) -> None:
        path = os.environ[MODEL_SOCKET_ENV]
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            try:
                self._conn = Client(path, family="AF_UNIX")
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        facts = self._conn.recv()
        self.image_spec, self.dim, self.context_length = facts["image_spec"], facts["dim"], facts["context_length"]
        self.device, self.dtype = "remote", "float16"
        self._in_flight: collections.deque[list[Future]] = collections.deque()
        threading.Thread(target=self._read_replies, name="model-process-replies", daemon=True).start()

    def forward(self, kind: Hashable, batch: list[np.ndarray]) -> list[Future]:
        # Images travel as float16 (half the bytes; what an fp16 model takes); tokens as they are.
        dtype = np.float16 if batch[0].dtype == np.float32 else batch[0].dtype
        stacked = np.empty((len(batch), *batch[0].shape), dtype=dtype)
        for row, item in zip(stacked, batch):
            row[...] = item
        futures = [Future() for _ in batch]
        self._in_flight.append(futures)  # before sending: the reply may come back at once
        self._conn.send((kind, stacked.dtype.str, stacked.shape))
        self._conn.send_bytes(stacked)
        return futures

    def _read_replies(self) -> None:
        """Resolve the futures of each batch sent, in order, as the model process answers."""
        while True:
            error = self._conn.recv()
            futures = self._in_flight.popleft()
            if error is not None:
                for future in futures:
                    future.set_exception(RuntimeError(f"model process: {error}"))
                continue
            vectors = np.frombuffer(self._conn.recv_bytes(), dtype=np.float32).reshape(len(futures), self.dim)
            for future, vector in zip(futures, vectors):
                future.set_result(vector)

    def postprocess(self, kind: Hashable, output: Future) -> np.ndarray:
        return output.result(timeout=self.settings.request_timeout_s)

    def describe(self) -> dict:
        return {**super().describe(), "model_process": os.environ.get(MODEL_SOCKET_ENV)}


def request_app():
    """gunicorn entry for a request process: ``bench.model_process:request_app()``."""
    from server.app import create_app

    settings = ServerSettings.from_env()
    return create_app(settings, backend=RemoteClipBackend(settings, resolve_spec(settings)))


def request_argv() -> list[str]:
    """The request processes: real gunicorn with the server's config, serving ``request_app()``."""
    return [python(), "-m", "gunicorn", "--config", str(ROOT / "server" / "gunicorn_conf.py"),
            "bench.model_process:request_app()"]


# ---- starting it from the bench --------------------------------------------------------------

@contextmanager
def model_process(env: dict[str, str], name: str, timeout_s: float = 60.0) -> Iterator[tuple[str, int]]:
    """Start the model process with ``env``; yields (socket path, pid) once it is warm."""
    folder = tempfile.mkdtemp(prefix="model-process-")
    socket_path = os.path.join(folder, "model.sock")
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    log = open(ROOT / "bench" / "results" / f"{name}.log", "wb")
    process = subprocess.Popen([python(), "-m", "bench.model_process", socket_path], cwd=ROOT,
                               env={**os.environ, "LOG_LEVEL": "WARNING", **env}, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(socket_path):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited early; see bench/results/{name}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready in {timeout_s} s")
            time.sleep(0.1)
        yield socket_path, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    serve_model(sys.argv[1])
