"""Design (b) of issue 10 as a measurement prototype: request processes feed ONE model process.

A benchmark prototype, not the product: the service still runs design (a) (one gunicorn process
per GPU with its own batcher), and nothing outside ``bench/`` imports this module. It exists so
``bench/feed_bench.py`` can measure (b) next to (a) with the simulated accelerator.

- The model process (``python -m bench.model_process SOCKET``) runs the real ``ModelRunner`` and
  ``Batcher`` with the sim backend (``CLIP_MODEL=sim:...``), then serves a
  ``multiprocessing.connection.Listener`` on a Unix socket. Each request process gets a few
  shared-memory slots (a file in /dev/shm that both map); a message names the slot that holds one
  batch of preprocessed items, so pixels are written once and never pass through the socket.
  Every item goes to the one batcher, which merges the batches of all request processes into GPU
  batches of up to MAX_BATCH_SIZE, and the reply is the float32 vectors.
- The request processes are the normal gunicorn app (``request_app()``, WEB_WORKERS=N) with
  ``RemoteClipBackend``: the sim backend's real preprocessing, and ``forward(batch)`` sends the
  batch to the model process; the request threads wait for the vectors in ``postprocess``. So each
  request process still batches its own concurrent requests, and the model process batches across
  processes. (A first version waited inside ``forward``: each request process then had one batch
  in flight, and with two processes the model process never had two batches to merge.)

Why shared memory: moving a 224-px item through the socket as float16 cost ~0.56 ms of CPU
(0.29 ms converting, the rest copies, most on the receiving side), writing it as float32 into a
slot ~0.06 ms (measured on this project's 2-core machine; a request costs ~4.5 ms in all).

Deliberately missing (what (b) would need in production, see docs/performance.md): /health that
reflects the model process, 429/504/503 carried across the socket with their codes and one
deadline per request (here the wait in ``postprocess`` has its own REQUEST_TIMEOUT_S), a model
process that is restarted and reconnected to (here its death only fails the batches in flight and
every later one), a slot kept until a batch that outlived its deadline has finished reading it,
and a SIGTERM drain ordered request processes first, then the model process.
"""

from __future__ import annotations

import collections
import mmap
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from multiprocessing.connection import Client, Connection, Listener

import numpy as np

from bench.harness import python, started
from core.model.batcher import Batcher
from core.model.runner import ModelRunner
from server.backends.sim import SimClipBackend
from server.models import resolve_spec
from server.settings import ServerSettings

MODEL_SOCKET_ENV = "MODEL_SOCKET"  # read by the request processes only; bench-only, not a setting
SLOTS = 4  # batches one request process may have in flight; a 5th waits for a slot (back-pressure)
SHARED_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None  # memory-backed; else the default temp dir
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
    size = backend.image_spec.size
    facts = {"image_spec": backend.image_spec, "dim": backend.dim, "context_length": backend.context_length,
             "slots": SLOTS, "slot_bytes": runner.batcher.max_batch_size * 3 * size * size * 4}  # float32
    # The socket appears only now, after the warm-up: its existence is the bench's readiness signal.
    with Listener(socket_path, family="AF_UNIX") as listener:
        while True:
            conn = listener.accept()
            threading.Thread(target=_serve_connection, args=(runner, conn, facts, os.path.dirname(socket_path)),
                             daemon=True).start()


def _serve_connection(runner: ModelRunner, conn: Connection, facts: dict, folder: str) -> None:
    """One request process: batches in, vectors out in the same order, until it disconnects.

    Receiving and replying are separate threads, so a request process may have several batches
    in flight and the batcher here can merge them with other processes' batches.
    """
    # Next to the socket, so the bench removes both even when this process is killed first.
    fd, slots_path = tempfile.mkstemp(prefix="slots-", dir=folder)
    os.ftruncate(fd, facts["slots"] * facts["slot_bytes"])
    slots = mmap.mmap(fd, facts["slots"] * facts["slot_bytes"])
    os.close(fd)
    conn.send({**facts, "slots_path": slots_path})
    replies: queue.SimpleQueue = queue.SimpleQueue()  # per message: its futures, or the error
    threading.Thread(target=_reply, args=(runner, conn, replies), daemon=True).start()
    while True:
        try:
            kind, dtype, shape, slot = conn.recv()
        except (EOFError, OSError):
            replies.put(None)
            os.remove(slots_path)  # the mapping itself goes when the last view of it does
            return
        batch = np.ndarray(shape, dtype=dtype, buffer=slots, offset=slot * facts["slot_bytes"])
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
        self.device = "remote"
        with open(facts["slots_path"], "r+b") as file:
            self._slots = mmap.mmap(file.fileno(), facts["slots"] * facts["slot_bytes"])
        self._slot_bytes = facts["slot_bytes"]
        self._free_slots: queue.SimpleQueue[int] = queue.SimpleQueue()
        for slot in range(facts["slots"]):
            self._free_slots.put(slot)
        self._in_flight: collections.deque[tuple[int, list[Future]]] = collections.deque()
        threading.Thread(target=self._read_replies, name="model-process-replies", daemon=True).start()

    def forward(self, kind: Hashable, batch: list[np.ndarray]) -> list[Future]:
        shape, dtype = (len(batch), *batch[0].shape), batch[0].dtype
        if len(batch) * batch[0].nbytes > self._slot_bytes:
            raise ValueError(f"a batch of {len(batch)} does not fit a slot; MAX_BATCH_SIZE above the model process's?")
        slot = self._free_slots.get()
        stacked = np.ndarray(shape, dtype=dtype, buffer=self._slots, offset=slot * self._slot_bytes)
        for row, item in zip(stacked, batch):
            row[...] = item
        futures = [Future() for _ in batch]
        self._in_flight.append((slot, futures))  # before sending: the reply may come back at once
        self._conn.send((kind, dtype.str, shape, slot))
        return futures

    def _read_replies(self) -> None:
        """Resolve the futures of each batch sent, in order, as the model process answers."""
        while True:
            try:
                error = self._conn.recv()
            except (EOFError, OSError):  # the model process is gone: fail what waits, not hang
                while self._in_flight:
                    slot, futures = self._in_flight.popleft()
                    for future in futures:
                        future.set_exception(RuntimeError("model process: connection lost"))
                    self._free_slots.put(slot)  # so a later forward() fails on the socket, not waits here
                return
            slot, futures = self._in_flight.popleft()
            if error is not None:
                for future in futures:
                    future.set_exception(RuntimeError(f"model process: {error}"))
            else:
                vectors = np.frombuffer(self._conn.recv_bytes(), dtype=np.float32).reshape(len(futures), self.dim)
                for future, vector in zip(futures, vectors):
                    future.set_result(vector)
            # The model process replied, so it is done reading the slot (unless it gave up on a batch
            # that was already running: a prototype's hole, see the module docstring).
            self._free_slots.put(slot)

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
    # APP_PACKAGE=server: the CLIP server's gunicorn settings (core/launcher.py); the app given
    # on the command line replaces the declared one.
    return ["env", "APP_PACKAGE=server", python(), "-m", "gunicorn", "--config", "python:core.gunicorn_conf",
            "bench.model_process:request_app()"]


# ---- starting it from the bench --------------------------------------------------------------

@contextmanager
def model_process(env: dict[str, str], name: str, timeout_s: float = 60.0) -> Iterator[tuple[str, int]]:
    """Start the model process with ``env``; yields (socket path, pid) once it is warm."""
    folder = tempfile.mkdtemp(prefix="model-process-", dir=SHARED_DIR)
    socket_path = os.path.join(folder, "model.sock")
    try:
        with started([python(), "-m", "bench.model_process", socket_path], env, name,
                     lambda: os.path.exists(socket_path), timeout_s) as process:
            yield socket_path, process.pid
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    serve_model(sys.argv[1])
