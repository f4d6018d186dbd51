"""An instance-wide budget for decode memory: requests reserve what their inputs will cost.

Each request estimates, from headers only, how many bytes decoding its inputs will hold at the
peak (pixels x bytes per pixel of the decoded mode, plus intermediate copies; audio duration x
sample rate x sample size) and reserves that before decoding. A request that does not fit now
waits up to ``wait_s`` for others to finish, then gets 429 + Retry-After; one that could never
fit (larger than the whole budget) gets 413 at once. Without this, a few dozen small, valid
files that decode to gigabytes run the container past its memory limit and Cloud Run kills it,
losing every request in flight (issue 7).

The budget is per process. gunicorn runs one worker process per GPU, each with its own
budget, so the default divides the instance's share by the number of worker processes (a
cross-process budget would need shared memory and buys little: workers are per GPU, and
Cloud Run spreads requests over them evenly).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from contextlib import contextmanager

from core.errors import Overloaded, PayloadTooLarge
from core.model.memory import container_memory_limit, release_freed_memory

log = logging.getLogger("core.model.admission")

# Share of the container's memory that decoding may hold at once. The rest is the model, the
# request bodies (MAX_REQUEST_MB x concurrency), Python and the allocator's slack.
AUTO_BUDGET_FRACTION = 0.25
# gunicorn's master exports the resolved worker count here (core.gunicorn_conf).
WORKER_COUNT_ENV = "GUNICORN_WORKER_PROCESSES"
# Once requests holding this much in all have finished, hand freed memory back to the OS
# (malloc_trim): after one large request, or when a burst of smaller ones has drained.
TRIM_AFTER_BYTES = 64 * 1024 * 1024
MIB = 1024 * 1024


class MemoryBudget:
    """A counting semaphore in bytes: ``with budget.reserve(n): decode(...)``."""

    def __init__(self, limit_bytes: int, wait_s: float = 2.0, trim_after_bytes: int = TRIM_AFTER_BYTES):
        if limit_bytes < 1:
            raise ValueError("limit_bytes must be positive")
        self.limit_bytes = int(limit_bytes)
        self.wait_s = wait_s
        self.trim_after_bytes = trim_after_bytes
        self.in_use = 0
        self.peak = 0
        self.refused = 0
        self._released_since_trim = 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int, what: str = "decoding this request"):
        """Hold ``nbytes`` of the budget for the block; 413 if it can never fit, 429 if not now."""
        nbytes = max(0, int(nbytes))
        if nbytes > self.limit_bytes:
            with self._cond:
                self.refused += 1
            raise PayloadTooLarge(
                f"{what} needs about {_mib(nbytes)} MiB of memory; this instance allows "
                f"{_mib(self.limit_bytes)} MiB (DECODE_MEMORY_BUDGET_MB): send smaller inputs",
                code="input_too_large_to_decode")
        self._acquire(nbytes)
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= nbytes
                if nbytes >= self.trim_after_bytes // 8:  # small decodes reuse what they freed: no trims
                    self._released_since_trim += nbytes
                # Trim after a large request, or when a burst has drained (16 concurrent 35 MiB
                # decodes each stay under the threshold but leave 350 MiB in glibc's arenas).
                trim = nbytes >= self.trim_after_bytes or (
                    self.in_use == 0 and self._released_since_trim >= self.trim_after_bytes)
                if trim:
                    self._released_since_trim = 0
                self._cond.notify_all()
            if trim:
                release_freed_memory()

    def _acquire(self, nbytes: int) -> None:
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while self.in_use + nbytes > self.limit_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.refused += 1
                    raise Overloaded(
                        f"the instance is decoding other large inputs ({_mib(self.in_use)} of "
                        f"{_mib(self.limit_bytes)} MiB in use); retry shortly",
                        code="memory_busy", retry_after=max(1, math.ceil(self.wait_s)))
                self._cond.wait(left)
            self.in_use += nbytes
            self.peak = max(self.peak, self.in_use)

    def snapshot(self) -> dict:
        """Budget, use and refusals in MiB, for /health and logs."""
        with self._cond:
            return {"limit_mb": _mib(self.limit_bytes), "in_use_mb": _mib(self.in_use),
                    "peak_mb": _mib(self.peak), "refused": self.refused}


def _mib(nbytes: int) -> int:
    return int(math.ceil(nbytes / MIB))


def worker_processes(configured: int | None, environ=os.environ) -> int:
    """gunicorn worker processes sharing this instance (set by the master; else the setting; else 1)."""
    raw = environ.get(WORKER_COUNT_ENV)
    if raw and raw.isdigit() and int(raw) > 0:
        return int(raw)
    return configured or 1


def auto_budget_bytes(workers: int, container_bytes: int | None = None) -> int:
    """AUTO_BUDGET_FRACTION of the container's memory limit, split across worker processes."""
    container_bytes = container_bytes or container_memory_limit()
    return max(MIB, int(container_bytes * AUTO_BUDGET_FRACTION / max(1, workers)))


def budget_from_settings(settings, wait_s: float | None = None) -> MemoryBudget:
    """The MemoryBudget DECODE_MEMORY_BUDGET_MB / DECODE_MEMORY_WAIT_S ask for (``wait_s`` overrides
    the wait: a batch job has no client to answer 429 and waits longer)."""
    if settings.decode_memory_budget_mb is not None:
        limit = int(settings.decode_memory_budget_mb * MIB)
    else:
        limit = auto_budget_bytes(worker_processes(settings.web_workers))
    log.info("decode memory budget %d MiB", _mib(limit))
    return MemoryBudget(limit, wait_s=settings.decode_memory_wait_s if wait_s is None else wait_s)
