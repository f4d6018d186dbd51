"""Fan-out over several single-GPU workers (``WORKER_URLS``): least-outstanding-requests, retries, breakers."""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from inference_client.breaker import CLOSED, OPEN, CircuitBreaker
from inference_client.errors import ConfigurationError, ConnectionFailed, NoWorkerAvailable, ServiceError
from inference_client.http import HttpClient, Media, is_retryable, read_media
from inference_client.whisper import form_fields, parse_transcript

T = TypeVar("T")
# Called as on_event(kind, url, detail): kinds "retry", "out", "probe_failed", "back".
EventHook = Callable[[str, str, str], None]


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """'http://a,http://b' (commas and/or whitespace) or a list -> distinct URLs without trailing '/'."""
    if isinstance(urls, str):
        urls = urls.replace(",", " ").split()
    cleaned = list(dict.fromkeys(url.strip().rstrip("/") for url in urls if url and url.strip()))
    if not cleaned:
        raise ConfigurationError("no worker URLs: pass --workers URL1,URL2 or set WORKER_URLS")
    return cleaned


@dataclass
class Worker:
    """One URL of the pool and what the pool knows about it."""

    http: HttpClient
    breaker: CircuitBreaker
    outstanding: int = 0
    cool_until: float = 0.0  # Retry-After: nothing is sent before this time
    succeeded: int = 0
    failed: int = 0
    last_chosen: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.http.url


class WorkerPool:
    """Spreads calls over several workers; each call goes to the one with the fewest calls in flight.

    A call that fails with 429, 502/503/504 or a connection error (a worker killed, restarted or
    overloaded) is sent again, to whichever worker is then best, up to ``max_attempts`` times in
    all, after a short jittered backoff. A URL that answered with ``Retry-After`` gets nothing
    until that time has passed. ``failure_threshold`` failures in a row take a URL out (circuit
    breaker); it is probed with GET /health after ``reset_s`` (doubling while it stays down, up to
    ``max_reset_s``) and comes back when the probe answers 200. When no URL is usable the call
    waits, up to ``max_wait_s``, then raises ``NoWorkerAvailable``. ``api_key`` defaults to
    ``$WHISPER_WORKER_API_KEY`` (pass "" for none). Thread-safe: call it from as
    many threads as you want requests in flight.
    """

    def __init__(self, urls: str | Sequence[str], api_key: str | None = None, *, timeout: float = 600.0,
                 connect_timeout: float = 5.0, max_attempts: int = 5, max_wait_s: float = 300.0,
                 failure_threshold: int = 3, reset_s: float = 2.0, max_reset_s: float = 60.0,
                 backoff_s: float = 0.2, max_backoff_s: float = 10.0, probe_timeout_s: float = 5.0,
                 on_event: EventHook | None = None):
        api_key = api_key if api_key is not None else os.environ.get("WHISPER_WORKER_API_KEY")
        self.workers = [Worker(HttpClient(url, api_key, timeout=timeout, connect_timeout=connect_timeout,
                                          max_retries=0),
                               CircuitBreaker(failure_threshold, reset_s, max_reset_s))
                        for url in parse_urls(urls)]
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.probe_timeout_s = probe_timeout_s
        self.on_event = on_event or (lambda kind, url, detail: None)
        self._lock = threading.Lock()
        self._ticket = itertools.count(1)

    @property
    def urls(self) -> list[str]:
        return [worker.url for worker in self.workers]

    def call(self, fn: Callable[[HttpClient], T]) -> T:
        """Run ``fn(http_client)`` on the best worker, retrying retryable failures on any worker."""
        failures = 0
        tried: set[str] = set()
        waiting_since: float | None = None
        last_error: Exception | None = None
        while True:
            worker, wait_s = self._acquire(tried)
            if worker is None:
                now = time.monotonic()
                waiting_since = waiting_since or now
                if now - waiting_since >= self.max_wait_s:
                    raise NoWorkerAvailable(f"no worker of {', '.join(self.urls)} usable for {self.max_wait_s:g} s"
                                            + (f"; last error: {_describe(last_error)}" if last_error else ""))
                time.sleep(max(0.01, min(wait_s, 1.0)))
                continue
            waiting_since = None
            try:
                result = fn(worker.http)
            except (ServiceError, ConnectionFailed) as err:
                self._release(worker, err)
                if not is_retryable(err):
                    raise
                failures += 1
                last_error = err
                tried.add(worker.url)
                if failures >= self.max_attempts:
                    raise
                self.on_event("retry", worker.url, f"{_describe(err)}; attempt {failures + 1} of {self.max_attempts}")
                time.sleep(random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))))
                continue
            except BaseException:
                with self._lock:  # not the worker's doing (a bug in fn, Ctrl-C): neither success nor failure
                    worker.outstanding -= 1
                raise
            self._release(worker, None)
            return result

    def transcribe(self, audio: Media, response_format: str = "json", **options) -> dict | str:
        """``WhisperClient.transcribe`` on the best worker (same options and return values)."""
        upload = read_media(audio, "audio")
        fields = form_fields(response_format, options)
        return self.call(lambda http: parse_transcript(
            http.send("POST", "/transcribe", files=[("audio", upload)], data=fields), response_format))

    def stats(self) -> list[dict]:
        """Per URL: breaker state, calls in flight, successes, failures by code."""
        with self._lock:
            return [{"url": w.url, "state": w.breaker.state, "outstanding": w.outstanding,
                     "succeeded": w.succeeded, "failed": w.failed, "errors": dict(w.errors)} for w in self.workers]

    def _acquire(self, tried: set[str] = frozenset()) -> tuple[Worker | None, float]:
        """(worker with the fewest calls in flight, 0), or (None, seconds until one may be usable).

        URLs in ``tried`` (those that already failed this call) are chosen only when no other is usable.
        """
        with self._lock:
            now = time.monotonic()
            for worker in self.workers:
                if worker.breaker.ready_to_probe():
                    # Probed in the background: no call waits for a probe while another URL can serve it.
                    worker.breaker.start_probe()
                    threading.Thread(target=self._probe, args=(worker,), daemon=True).start()
            usable = [w for w in self.workers if w.breaker.state == CLOSED and w.cool_until <= now]
            usable = [w for w in usable if w.url not in tried] or usable
            if usable:
                # Ties go to the least recently chosen, so an idle pool still rotates.
                worker = min(usable, key=lambda w: (w.outstanding, w.last_chosen))
                worker.outstanding += 1
                worker.last_chosen = next(self._ticket)
                return worker, 0.0
            times = [w.breaker.open_until if w.breaker.state == OPEN else w.cool_until
                     if w.breaker.state == CLOSED else now + 0.05 for w in self.workers]
            return None, max(0.0, min(times) - now)

    def _probe(self, worker: Worker) -> None:
        """GET /health: 200 puts the URL back in service, anything else keeps it out longer."""
        try:
            worker.http.health(timeout=self.probe_timeout_s)
            healthy = True
        except (ServiceError, ConnectionFailed):
            healthy = False
        with self._lock:
            worker.breaker.probe_result(healthy)
        self.on_event("back" if healthy else "probe_failed", worker.url,
                      "GET /health answered 200" if healthy else "GET /health failed")

    def _release(self, worker: Worker, error: Exception | None) -> None:
        tripped = False
        with self._lock:
            worker.outstanding -= 1
            if error is None:
                worker.breaker.record_success()
                worker.succeeded += 1
                return
            worker.failed += 1
            code = getattr(error, "code", type(error).__name__)
            worker.errors[code] = worker.errors.get(code, 0) + 1
            status = getattr(error, "status", None)
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                worker.cool_until = max(worker.cool_until, time.monotonic() + retry_after)
            if status == 429:
                return  # load shedding: the instance is fine, just busy; Retry-After covers it
            if isinstance(error, ConnectionFailed) or (status is not None and status >= 500):
                tripped = worker.breaker.record_failure()
            else:
                worker.breaker.record_success()  # a 4xx about the input: the instance answered properly
        if tripped:
            self.on_event("out", worker.url, f"{worker.breaker.failure_threshold} failures in a row "
                          f"({_describe(error)}); probing /health in {worker.breaker.reset_s:g} s")


def _describe(error: Exception) -> str:
    if isinstance(error, ServiceError):
        return f"{error.status} {error.code}"
    text = f"{getattr(error, 'code', type(error).__name__)}: {error}"
    return text if len(text) <= 160 else text[:157] + "..."
