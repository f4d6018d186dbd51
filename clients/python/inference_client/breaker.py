"""A per-URL circuit breaker: out after consecutive failures, back in after a /health probe succeeds."""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, PROBING = "closed", "open", "probing"


class CircuitBreaker:
    """closed (in service) -> open (out, after ``failure_threshold`` failures in a row) -> probing -> closed.

    While open, nothing is sent to the URL. Once ``open_until`` has passed, one caller probes it;
    a failed probe keeps it out twice as long (up to ``max_reset_s``), a good one puts it back.
    Not thread-safe on its own: the pool calls it under its lock.
    """

    def __init__(self, failure_threshold: int = 3, reset_s: float = 2.0, max_reset_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self.max_reset_s = max_reset_s
        self.clock = clock
        self.state = CLOSED
        self.failures = 0  # consecutive
        self.open_until = 0.0
        self._delay = reset_s

    def record_success(self) -> None:
        """An answer came (even a 4xx about the input): the instance works."""
        self.failures = 0

    def record_failure(self) -> bool:
        """A connection error or 5xx; True when this failure took the URL out of service."""
        self.failures += 1
        if self.state == CLOSED and self.failures >= self.failure_threshold:
            self._open(self.reset_s)
            return True
        return False

    def ready_to_probe(self) -> bool:
        """Open and its wait is over: the next caller should probe it."""
        return self.state == OPEN and self.clock() >= self.open_until

    def start_probe(self) -> None:
        """One caller probes; others keep away meanwhile."""
        self.state = PROBING

    def probe_result(self, healthy: bool) -> None:
        """Back in service when healthy, else out for twice as long."""
        if healthy:
            self.state, self.failures, self._delay = CLOSED, 0, self.reset_s
        else:
            self._open(min(self.max_reset_s, self._delay * 2))

    def _open(self, delay: float) -> None:
        self.state, self._delay = OPEN, delay
        self.open_until = self.clock() + delay
