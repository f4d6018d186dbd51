"""A webhook receiver on loopback for the callback tests: verifies signatures, answers as scripted."""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.deferred.callbacks import verify

SECRET = "test-secret"  # what the receiver fixture verifies signatures with


@dataclass
class Received:
    """One request the receiver got, and whether its signature checked out."""

    path: str
    headers: dict
    body: bytes
    signature_ok: bool
    answered: int


@dataclass
class Receiver:
    """``ThreadingHTTPServer`` on 127.0.0.1 that answers ``script`` statuses in turn (then 200)."""

    secret: str
    script: list[tuple[int, dict]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    tls: ssl.SSLContext | None = None  # serve https with this server context

    def __post_init__(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = verify(receiver.secret, self.headers.get("X-Signature", ""), body)
                with receiver.lock:
                    status, headers = receiver.script.pop(0) if receiver.script else (200, {})
                    if not ok:
                        status, headers = 401, {}
                    receiver.received.append(Received(self.path, dict(self.headers), body, ok, status))
                    receiver.arrived.notify_all()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        """The CALLBACK_ALLOWED_HOSTS entry for this receiver."""
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/hook") -> str:
        """The callback URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def accepted(self) -> list[Received]:
        """Deliveries answered 2xx."""
        with self.lock:
            return [r for r in self.received if 200 <= r.answered < 300]

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Received]:
        """Block until ``count`` requests arrived; returns them all."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, timeout_s):
                raise TimeoutError(f"{len(self.received)} of {count} callbacks arrived")
            return list(self.received)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    """A running Receiver that checks signatures made with SECRET; closed after the test."""
    running = Receiver(SECRET)
    yield running
    running.close()
