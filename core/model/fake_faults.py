"""Faults the fake backends can stage on request, for the reliability tests and ``make faults``.

Read from the environment by the fake backends only (never by a real one), so a test can make
real gunicorn processes load slowly, fail to load or run out of GPU memory:

- ``FAKE_LOAD_DELAY_S=0,3,6``: the n-th process started under one gunicorn master sleeps the
  n-th delay (cycling) in ``load()``, so replicas finish loading at different times, as replicas
  loading onto one GPU do;
- ``FAKE_LOAD_FAILURES=1``: the first that many ``load()`` calls under one master run out of
  memory (a CUDA OOM on the eighth replica, say); the next call loads normally;
- ``FAKE_LOAD_CRASHES=1``: the first that many ``load()`` calls fail with another error (corrupt
  weights, say), which no retry in the process mends;
- ``FAKE_OOM_ABOVE=4``: ``forward()`` raises ``OutOfMemoryError`` for a batch of more items;
- ``FAKE_BATCH_DELAY_S=0.5``: each ``forward()`` takes that long (jobs in flight when a fault hits).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time


class OutOfMemoryError(RuntimeError):
    """Stands in for ``torch.cuda.OutOfMemoryError`` (same name, no torch in the fake backends)."""


def _ticket() -> int:
    """This load's number among the loads under one gunicorn master (0, 1, 2, ...)."""
    path = os.path.join(tempfile.gettempdir(), f"fake-load-tickets-{os.getppid()}")
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # siblings start together: one number each
        handle.seek(0)
        taken = len(handle.read())
        handle.write("x")
    return taken


def simulate_load() -> None:
    """Sleep and/or fail as FAKE_LOAD_DELAY_S, FAKE_LOAD_FAILURES and FAKE_LOAD_CRASHES say (no-op when unset)."""
    delays = [float(v) for v in os.environ.get("FAKE_LOAD_DELAY_S", "").split(",") if v.strip()]
    failures = int(os.environ.get("FAKE_LOAD_FAILURES", "0") or 0)
    crashes = int(os.environ.get("FAKE_LOAD_CRASHES", "0") or 0)
    if not delays and not failures and not crashes:
        return
    ticket = _ticket()
    if delays:
        time.sleep(delays[ticket % len(delays)])
    if ticket < failures:
        raise OutOfMemoryError(f"CUDA out of memory (staged by FAKE_LOAD_FAILURES for load #{ticket})")
    if ticket < crashes:
        raise RuntimeError(f"weights are corrupt (staged by FAKE_LOAD_CRASHES for load #{ticket})")


def simulate_forward(batch_size: int) -> None:
    """Take FAKE_BATCH_DELAY_S; raise OutOfMemoryError above FAKE_OOM_ABOVE items (no-ops when unset)."""
    delay = os.environ.get("FAKE_BATCH_DELAY_S")
    if delay:
        time.sleep(float(delay))
    limit = os.environ.get("FAKE_OOM_ABOVE")
    if limit and batch_size > int(limit):
        raise OutOfMemoryError(f"CUDA out of memory: a batch of {batch_size} (staged: FAKE_OOM_ABOVE={limit})")
