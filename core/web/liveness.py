"""GET /livez: Cloud Run's liveness probe, answered even when every request thread is busy.

Cloud Run's HTTP probes target the container port (as Knative's runtime contract requires), so
the probe cannot go to a side port; and a gthread worker queues a new connection behind its
busy threads, where a probe would time out exactly when the instance is merely loaded. So the
worker class here is gunicorn's gthread worker with one change: before a connection is handed
to the thread pool, its main loop peeks at the first bytes, and a ``GET /livez`` is answered
right there (a few hundred bytes, no Flask, no thread) and the connection closed.

Alive means the process can still make progress: 200 while the model loads (the startup probe
covers that) and while it serves; 503 when the batcher thread is dead or stopped, the model
failed to load, a batch has hung, or the last batches all failed. Cloud Run then restarts the
instance. With several workers (one per GPU), a probe reaches one of them; each answers for its
own model.
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import time
from functools import partial

from flask import Flask, current_app, jsonify
from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, TConn, ThreadWorker

# gunicorn's master imports this module (the worker class) before its on_starting hook sets
# PROMETHEUS_MULTIPROC_DIR; nothing imported here may import prometheus_client (a test checks).
from core.web.openapi import json_content, operation

LIVEZ_PATH = "/livez"
LIVEZ_SCHEMA = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
PEEK_BYTES = 4096
# Only these answer "dead": loading is alive (the startup probe waits for it).
DEAD_CODES = frozenset({"load_failed", "inference_thread_dead", "stopped", "batch_hung", "batches_failing",
                        "unavailable"})


def liveness(app) -> tuple[bool, str | None]:
    """(alive, reason code) of the app's model runner; cheap and safe from any thread."""
    runner = getattr(app, "extensions", {}).get("model_runner")
    if runner is None:
        return True, None  # still being built: nothing is wedged yet
    ok, reason, _ = runner.health()
    code = None if ok else reason.code
    return code not in DEAD_CODES, code


def liveness_body(alive: bool, code: str | None) -> bytes:
    """The JSON body of /livez."""
    body = {"status": "ok" if alive else "unavailable"}
    if code:
        body["reason"] = code
    return json.dumps(body, separators=(",", ":")).encode()


def probe_request_length(head: bytes) -> int | None:
    """Length of a complete ``GET|HEAD /livez`` request at the start of ``head``, else None."""
    for method in (b"GET ", b"HEAD "):
        if head.startswith(method + LIVEZ_PATH.encode()):
            rest = head[len(method) + len(LIVEZ_PATH):len(method) + len(LIVEZ_PATH) + 1]
            end = head.find(b"\r\n\r\n")
            if rest in (b" ", b"?") and end != -1 and b"content-length:" not in head[:end].lower():
                return end + 4
    return None


def probe_response(app, head_only: bool = False) -> bytes:
    """The full HTTP/1.1 response to a liveness probe for ``app``."""
    try:
        alive, code = liveness(app)
    except Exception:  # noqa: BLE001 - a check that cannot run is not a live instance
        alive, code = False, "check_failed"
    body = liveness_body(alive, code)
    status = "200 OK" if alive else "503 Service Unavailable"
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + body


def answer_probe(sock: socket.socket, head: bytes, app) -> bool:
    """Answer a liveness probe waiting on ``sock`` if ``head`` (peeked) is one; True when answered."""
    length = probe_request_length(head)
    if length is None:
        return False
    sock.recv(length)  # consume exactly the probe's request; it was already in the buffer
    sock.setblocking(True)
    sock.settimeout(1.0)  # a response of ~200 bytes fits any socket buffer; never stall the loop
    sock.sendall(probe_response(app, head_only=head.startswith(b"HEAD ")))
    return True


class LivenessWorker(ThreadWorker):
    """gunicorn's gthread worker whose main loop answers ``GET /livez`` itself (see module doc).

    While a thread is free, connections go straight to the pool exactly as in gthread (no cost:
    a free thread answers /livez through Flask at once). Only when every thread is taken does the
    main loop look at a connection's first bytes itself.
    """

    _in_flight = 0  # connections handed to the pool and not finished; main-loop thread only

    def enqueue_req(self, conn):
        self._in_flight += 1
        super().enqueue_req(conn)

    def finish_request(self, conn, fs):
        self._in_flight -= 1
        super().finish_request(conn, fs)

    def accept(self, listener):
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        self._route(conn)

    def on_pending_socket_readable(self, conn, client):
        self.poller.unregister(client)
        self.pending_conns.remove(conn)
        conn.data_ready = True
        self._route(conn)

    def on_client_socket_readable(self, conn, client):
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._route(conn)

    def _route(self, conn) -> None:
        """Hand to a free thread; else answer a probe here, or wait on the poller for the first bytes."""
        if self.cfg.is_ssl or self._in_flight < self.cfg.threads:
            self.enqueue_req(conn)
            return
        try:
            conn.sock.setblocking(False)
            head = conn.sock.recv(PEEK_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            # Nothing sent yet: wait on the poller rather than in a thread (gunicorn's own
            # threads wait up to DEFAULT_WORKER_DATA_TIMEOUT, then park the connection here too).
            conn.timeout = time.monotonic() + DEFAULT_WORKER_DATA_TIMEOUT + self.cfg.keepalive
            self.pending_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))
            return
        except OSError:
            self._drop(conn)
            return
        if not head:  # closed by the client
            self._drop(conn)
            return
        try:
            if answer_probe(conn.sock, head, self.wsgi):
                self._drop(conn)
                return
        except OSError:
            self._drop(conn)
            return
        conn.data_ready = True
        self.enqueue_req(conn)

    def _drop(self, conn) -> None:
        self.nr_conns -= 1
        conn.close()


def install_liveness(app: Flask) -> None:
    """Register /livez in Flask too: the same answer when not served by LivenessWorker."""

    @app.get(LIVEZ_PATH)
    @operation("Liveness: 200 while the process can still serve (loading included), 503 when wedged",
               responses={200: ("Alive.", json_content(LIVEZ_SCHEMA))}, errors=(503,), tags=["probes"])
    def livez():
        alive, code = liveness(current_app)
        response = jsonify(json.loads(liveness_body(alive, code)))
        response.status_code = 200 if alive else 503
        response.headers["Cache-Control"] = "no-store"
        return response
