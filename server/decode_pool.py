"""One process-wide thread pool that decodes the images of a multi-image request in parallel.

Pillow releases the GIL while it decodes and resamples, so a request with eight photos used to
take eight decodes' time on its own thread while other cores idled. A request with more than one
image now decodes them on up to ``parallel`` threads: its own thread and pool threads. One
bounded pool for the whole process keeps the thread count at the CPU count however many
requests arrive at once. Results keep the input order, and when images are bad the error of the
first bad one (in input order) is raised, as when they decoded one after another.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

from core.model.cpus import available_cpus

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


@functools.cache
def pool_threads() -> int:
    """Threads of the shared pool: the CPUs this container may use, at least 2.

    Read once per process: every request asks, and reading the cgroup files each time cost
    0.19 ms of a 224-px request's 2.4 ms (a container's CPU quota does not change while it runs).
    """
    return max(2, available_cpus())


def shared_pool() -> ThreadPoolExecutor:
    """The process's decode pool, made on first use (after gunicorn's fork, never in the master)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(pool_threads(), thread_name_prefix="image-decode")
        return _pool


def _forget_pool_in_child() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()  # the parent's threads do not exist in a fork


os.register_at_fork(after_in_child=_forget_pool_in_child)


def decode_all(decode: Callable[[Any], Any], items: Sequence[Any], parallel: int) -> list[Any]:
    """``[decode(item) for item in items]`` on up to ``parallel`` threads; the first bad item's error."""
    if parallel < 2 or len(items) < 2:
        return [decode(item) for item in items]
    results: list[Any] = [None] * len(items)
    errors: dict[int, Exception] = {}
    lock = threading.Lock()
    next_index = 0

    def lane() -> None:
        nonlocal next_index
        while True:
            with lock:
                index = next_index
                # Items are taken in order, so every item before a failed one is already taken;
                # what comes after it cannot change which error the request gets.
                if index >= len(items) or (errors and index > min(errors)):
                    return
                next_index += 1
            try:
                results[index] = decode(items[index])
            except Exception as err:  # noqa: BLE001 - re-raised on the request thread below
                with lock:
                    errors[index] = err

    helpers = [shared_pool().submit(lane) for _ in range(min(parallel, len(items)) - 1)]
    lane()  # the request's own thread decodes too: a pool busy with other requests never stalls it
    # A helper still queued behind other requests' work has nothing left to do: cancel it (and do
    # not wait on it: a cancelled future only counts as done once a pool thread dequeues it).
    started = [helper for helper in helpers if not helper.cancel()]
    wait_futures(started)  # each finishes the image it took
    if errors:
        raise errors[min(errors)]
    return results
