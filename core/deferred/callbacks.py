"""Callback delivery: sign a job's result, POST it to the checked address, retry what is worth it.

- Signature: ``X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(CALLBACK_SECRET, "<t>.<body>")>``,
  fresh for every attempt (a receiver rejecting old timestamps still accepts a late retry).
- One attempt = one TCP connection to an address the guard checked (no second DNS lookup),
  TLS verified against the URL's host name, a timeout, and no redirect followed.
- Retried: connection errors and timeouts, 5xx, 408 and 429; exponential backoff with jitter, at
  least ``Retry-After``; up to ``max_attempts`` and ``max_age_s`` since the job finished.
  Anything else (2xx excepted) is final: a 3xx, a 4xx, an address the guard refuses.
- ``CallbackSender`` runs attempts on a few threads and keeps waiting retries in a heap, so a
  receiver that is down costs memory for its results, not a sleeping thread each.
"""

from __future__ import annotations

import email.utils
import hashlib
import heapq
import hmac
import http.client
import itertools
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.deferred.address_guard import AddressGuard, CallbackRefused, CheckedTarget

log = logging.getLogger("core.deferred.callbacks")

RETRY_STATUSES = frozenset({408, 429})
USER_AGENT = "inference-callbacks/1"
_JITTER = random.Random()
SocketFactory = Callable[[tuple[str, int], float], socket.socket]


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The X-Signature header value for ``body`` at ``timestamp`` (default: now)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, header: str, body: bytes, tolerance_s: float = 300, now: float | None = None) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_s`` old."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to try one delivery."""

    timeout_s: float = 10.0
    max_attempts: int = 6
    max_age_s: float = 900.0
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random = _JITTER) -> float:
        """Seconds before attempt ``attempt + 1``: base * 2^(attempt-1), jittered to 50-100%, >= Retry-After."""
        backoff = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        jittered = backoff * rng.uniform(0.5, 1.0)  # spread a burst of failed deliveries apart
        return max(jittered, retry_after or 0.0)


@dataclass
class AttemptResult:
    """What one POST achieved."""

    delivered: bool
    retryable: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def default_socket_factory(address: tuple[str, int], timeout: float) -> socket.socket:
    """A TCP connection to an IP literal (no name lookup happens here)."""
    return socket.create_connection(address, timeout=timeout)


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP to one checked address; the Host header still names the URL's host."""

    def __init__(self, target: CheckedTarget, address: str, timeout: float, socket_factory: SocketFactory):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = address
        self._socket_factory = socket_factory

    def connect(self):
        self.sock = self._socket_factory((self._address, self.port), self.timeout)


class _PinnedTLSConnection(http.client.HTTPSConnection):
    """HTTPS to one checked address; SNI and certificate checked against the URL's host."""

    def __init__(self, target: CheckedTarget, address: str, timeout: float, socket_factory: SocketFactory,
                 context: ssl.SSLContext):
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._address = address
        self._socket_factory = socket_factory

    def connect(self):
        sock = self._socket_factory((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class Deliverer:
    """Makes single signed delivery attempts through the address guard."""

    def __init__(self, secret: str, guard: AddressGuard, policy: RetryPolicy,
                 socket_factory: SocketFactory = default_socket_factory, ssl_context: ssl.SSLContext | None = None):
        self.secret = secret
        self.guard = guard
        self.policy = policy
        self.socket_factory = socket_factory
        self.ssl_context = ssl_context or ssl.create_default_context()

    def attempt(self, url: str, body: bytes, job_id: str, attempt: int = 1, timeout_s: float | None = None
                ) -> AttemptResult:
        """One POST of ``body`` to ``url``: resolve + check once, connect to the checked address."""
        try:
            target = self.guard.check(url)
        except CallbackRefused as err:
            # A name that no longer resolves may be a DNS blip; an address the guard refuses is final.
            return AttemptResult(False, retryable="does not resolve" in err.message, error=err.message)
        timeout = timeout_s or self.policy.timeout_s
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "X-Job-Id": job_id,
                   "X-Delivery-Attempt": str(attempt), "X-Signature": sign(self.secret, body)}
        errors = []
        for address in target.addresses:  # each was checked; the next is tried only if this one is down
            if target.scheme == "https":
                conn = _PinnedTLSConnection(target, address, timeout, self.socket_factory, self.ssl_context)
            else:
                conn = _PinnedConnection(target, address, timeout, self.socket_factory)
            try:
                conn.connect()
            except OSError as err:
                errors.append(f"{address}: {type(err).__name__}: {err}")
                conn.close()
                continue  # never connected: the next checked address may be up
            try:
                conn.request("POST", target.path, body=body, headers=headers)
                response = conn.getresponse()
                response.read(64 * 1024)  # drain a little so the connection closes cleanly
                return self._result(response.status, response.getheader("Retry-After"))
            except (OSError, http.client.HTTPException) as err:
                # Sent but no answer: the receiver may have it; retry later (it dedupes on job_id).
                return AttemptResult(False, retryable=True, error=f"{address}: {type(err).__name__}: {err}")
            finally:
                conn.close()
        return AttemptResult(False, retryable=True, error="; ".join(errors)[:500])

    @staticmethod
    def _result(status: int, retry_after: str | None) -> AttemptResult:
        if 200 <= status < 300:
            return AttemptResult(True, False, status)
        if 300 <= status < 400:
            return AttemptResult(False, False, status, error=f"HTTP {status}: redirects are not followed")
        retryable = status >= 500 or status in RETRY_STATUSES
        return AttemptResult(False, retryable, status, error=f"HTTP {status}",
                             retry_after=parse_retry_after(retry_after) if retryable else None)

    def deliver(self, url: str, body: bytes, job_id: str, sleep: Callable[[float], object] = time.sleep) -> dict:
        """Attempt until delivered, final, or out of attempts/age; returns the delivery record."""
        started = time.monotonic()
        record = new_delivery_record()
        for attempt in itertools.count(1):
            result = self.attempt(url, body, job_id, attempt)
            update_delivery_record(record, attempt, result)
            delay = self.next_delay(attempt, result, time.monotonic() - started)
            if delay is None:
                break
            sleep(delay)
        finish_delivery_record(record, job_id, url)
        return record

    def next_delay(self, attempt: int, result: AttemptResult, age_s: float) -> float | None:
        """Seconds to wait before retrying, or None when this delivery is over."""
        if result.delivered or not result.retryable or attempt >= self.policy.max_attempts:
            return None
        delay = self.policy.delay(attempt, result.retry_after)
        if age_s + delay > self.policy.max_age_s:
            return None
        return delay


def new_delivery_record() -> dict:
    """The delivery part of a job record, before the first attempt."""
    return {"state": "pending", "attempts": 0, "last_status": None, "error": None}


def update_delivery_record(record: dict, attempt: int, result: AttemptResult) -> None:
    """Fold one attempt into the record."""
    record.update(attempts=attempt, last_status=result.status, error=result.error,
                  state="delivered" if result.delivered else "retrying")


def finish_delivery_record(record: dict, job_id: str, url: str) -> None:
    """Mark the delivery final and log its outcome (host only: a URL's query may hold tokens)."""
    if record["state"] != "delivered":
        record["state"] = "failed"
    host = _host(url)
    level = logging.INFO if record["state"] == "delivered" else logging.WARNING
    log.log(level, "callback %s", record["state"], extra={
        "job_id": job_id, "callback_host": host, "attempts": record["attempts"],
        "last_status": record["last_status"], "callback_error": record["error"]})


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    job_id: str = field(compare=False)
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    started: float = field(compare=False)
    record: dict = field(compare=False)
    on_done: Callable[[dict], None] = field(compare=False)


class CallbackSender:
    """Asynchronous deliveries: a few attempt threads, retries waiting in a heap until due."""

    def __init__(self, deliverer: Deliverer, threads: int = 4, on_attempt: Callable[[str, dict], None] | None = None):
        self.deliverer = deliverer
        self.on_attempt = on_attempt
        self._heap: list[_Pending] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="callback")
        self._in_flight = 0
        self._final = False  # shutting down: one last attempt each, no more retries
        self._thread = threading.Thread(target=self._schedule, name="callback-scheduler", daemon=True)
        self._thread.start()

    def send(self, job_id: str, url: str, body: bytes, on_done: Callable[[dict], None]) -> None:
        """Deliver ``body`` to ``url`` in the background; ``on_done(record)`` when final."""
        item = _Pending(time.monotonic(), next(self._seq), job_id, url, body, time.monotonic(),
                        new_delivery_record(), on_done)
        with self._cond:
            self._in_flight += 1
            heapq.heappush(self._heap, item)
            self._cond.notify()

    def _schedule(self) -> None:
        while True:
            with self._cond:
                while not self._heap or (self._heap[0].due > time.monotonic() and not self._final):
                    timeout = None if not self._heap else self._heap[0].due - time.monotonic()
                    self._cond.wait(timeout)
                item = heapq.heappop(self._heap)
            self._pool.submit(self._attempt, item)

    def _attempt(self, item: _Pending) -> None:
        attempt = item.record["attempts"] + 1
        timeout = None
        if self._final:
            timeout = min(self.deliverer.policy.timeout_s, 1.5)  # the instance is about to be killed
        try:
            result = self.deliverer.attempt(item.url, item.body, item.job_id, attempt, timeout)
        except Exception as err:  # noqa: BLE001 - a bug here must not lose the delivery silently
            log.exception("callback attempt crashed")
            result = AttemptResult(False, False, error=f"{type(err).__name__}: {err}")
        update_delivery_record(item.record, attempt, result)
        delay = None if self._final else self.deliverer.next_delay(
            attempt, result, time.monotonic() - item.started)
        if delay is not None:
            if self.on_attempt:
                self.on_attempt(item.job_id, dict(item.record))
            with self._cond:
                item.due = time.monotonic() + delay
                item.seq = next(self._seq)
                heapq.heappush(self._heap, item)
                self._cond.notify()
            return
        finish_delivery_record(item.record, item.job_id, item.url)
        try:
            item.on_done(item.record)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def finalize(self) -> None:
        """Shutting down: waiting retries become due now, and every attempt from here is the last."""
        with self._cond:
            self._final = True
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Finalize, then wait up to ``timeout_s`` until every delivery is final; False if some are not."""
        self.finalize()
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def pending(self) -> int:
        """Deliveries not yet final."""
        with self._cond:
            return self._in_flight
