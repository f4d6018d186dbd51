"""Dynamic batching across concurrent requests: one model thread fed by a bounded, fair queue.

Request threads ``submit`` items (already decoded and preprocessed) and wait on Futures. The
batcher thread owns the model: it runs ``startup`` (load + warm-up) first, then repeatedly builds
a batch and calls ``run_batch(key, payloads)`` once for all of it. Items of one key only share a
batch (e.g. "image" vs "text", or a Whisper decoding configuration).

Fairness: every submission belongs to a *group* (one request). A batch is filled round-robin
across groups -- one item from each group that has one with the batch's key, then again -- and the
groups that got a turn move to the back, so an 8 s clip that arrives behind the ~120 chunks of an
hour-long recording rides in the very next batch instead of waiting for all of them.

Guarantees (each has a test):
- every Future resolves: a failing batch fails only its own items (InferenceFailed, 500), a
  result list of the wrong length fails the batch, and if the thread ever dies every waiting item
  gets NotReady and /health turns 503 (a peer's health stayed green while inference hung);
- MAX_QUEUE bounds every item not yet running, whatever its key: a full queue refuses new work at
  once with Overloaded (429 + Retry-After) instead of letting latency and memory grow without bound;
- an item whose deadline passed before its batch ran gets DeadlineExceeded (504) and costs no
  model time; a waiter that gives up cancels its items, and ``discard`` drops a whole group's;
- a GPU out-of-memory error costs no request: the batch is split in halves, the memory cache
  freed, and the halves run again, down to one item; only an item that fails alone fails, with
  OutOfMemory (503 + Retry-After). The batch limit halves at each OOM and /health says so.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from core.errors import DeadlineExceeded, InferenceFailed, NotReady, OutOfMemory, Overloaded, PayloadTooLarge, Reason

log = logging.getLogger("core.model.batcher")

RunBatch = Callable[[Hashable, list[Any]], Sequence[Any]]
# Seconds a client is told to wait after an item ran out of memory alone: the next batches are
# smaller, and a neighbour's memory may be free by then.
OOM_RETRY_AFTER_S = 2


def is_out_of_memory(err: BaseException) -> bool:
    """A GPU out-of-memory error, recognised without importing torch: torch.cuda.OutOfMemoryError
    by its class name, CTranslate2's (faster-whisper) RuntimeError by its message."""
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(err).__mro__):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


@dataclass
class _Item:
    key: Hashable
    payload: Any
    future: Future
    deadline: float  # time.monotonic() after which the result is useless to the client
    group: Hashable = None  # the request it belongs to (fair share)


@dataclass
class BatcherStats:
    """Counters read by /health, logs, the benchmark and the tests."""

    batches: int = 0
    items: int = 0
    failed_batches: int = 0
    consecutive_failures: int = 0
    expired_items: int = 0
    rejected_items: int = 0
    last_error: str | None = None
    oom_splits: int = 0  # batches split after running out of memory
    oom_failed_items: int = 0  # items that ran out of memory alone (503 out_of_memory)
    longest_batch_s: float = 0.0
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)

    def snapshot(self) -> dict:
        """A JSON-friendly copy."""
        return {
            "batches": self.batches, "items": self.items, "failed_batches": self.failed_batches,
            "expired_items": self.expired_items, "rejected_items": self.rejected_items,
            "oom_splits": self.oom_splits, "oom_failed_items": self.oom_failed_items,
            "largest_batch": max(self.batch_sizes, default=0),
            "longest_batch_s": round(self.longest_batch_s, 3),
            "mean_batch_size": round(self.items / self.batches, 2) if self.batches else 0.0,
        }


class Batcher:
    """Collects submitted items into batches and runs them on one dedicated thread."""

    def __init__(self, run_batch: RunBatch, *, max_batch_size: int, max_wait_ms: float,
                 max_queue: int, startup: Callable[[], None] | None = None,
                 name: str = "batcher", unhealthy_after_failures: int = 3,
                 stuck_after_s: float = 120.0, free_memory: Callable[[], None] | None = None,
                 out_of_memory: Callable[[BaseException], bool] = is_out_of_memory):
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be >= 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.name = name
        self.unhealthy_after_failures = unhealthy_after_failures
        self.stuck_after_s = stuck_after_s
        self.stats = BatcherStats()
        self.free_memory = free_memory or (lambda: None)  # e.g. torch.cuda.empty_cache after an OOM
        self.out_of_memory = out_of_memory
        self.shrunk_from: int | None = None  # the batch limit before the first OOM shrank it
        self._startup = startup
        # Waiting items per group (request), in round-robin order: the front group starts the
        # next batch. Every waiting item counts against max_queue, whatever its key.
        self._groups: dict[Hashable, collections.deque[_Item]] = {}
        self._size = 0
        self._cond = threading.Condition()
        self._state = "starting"
        # Requests being decoded right now whose items will arrive soon (see ``expecting``).
        self._expected = 0
        self._expected_lock = threading.Lock()
        self._failure: str | None = None
        self._started = threading.Event()  # start-up is over, whichever way it went
        self._on_startup_failure: list[Callable[[], None]] = []
        self._busy_since: float | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    # ---- request-thread side -------------------------------------------------------------

    def start(self) -> Batcher:
        """Start the model thread (runs ``startup`` first); returns self."""
        self._thread.start()
        return self

    def submit(self, payload: Any, *, key: Hashable = "default", timeout_s: float = 60.0,
               deadline: float | None = None, group: Hashable = None) -> Future:
        """Queue one item; raises Overloaded when full and NotReady before start-up ends."""
        return self.submit_many([payload], key=key, timeout_s=timeout_s, deadline=deadline, group=group)[0]

    def submit_many(self, payloads: Sequence[Any], *, key: Hashable = "default",
                    timeout_s: float = 60.0, deadline: float | None = None,
                    group: Hashable = None) -> list[Future]:
        """Queue a request's items together: all or none, so a 429 never half-runs a request.

        ``deadline`` (time.monotonic()) overrides ``timeout_s``; ``group`` names the request the
        items belong to for round-robin batching (default: this call is its own group).
        """
        self.ensure_accepting()
        if len(payloads) > self.max_queue:
            raise PayloadTooLarge(f"{len(payloads)} items in one request; the queue holds {self.max_queue} "
                                  "(MAX_QUEUE)", code="too_many_inputs")
        deadline = time.monotonic() + timeout_s if deadline is None else deadline
        group = object() if group is None else group
        items = [_Item(key, p, Future(), deadline, group) for p in payloads]
        with self._cond:
            if self._size + len(items) > self.max_queue:
                self.stats.rejected_items += len(items)
                raise Overloaded(f"inference queue is full ({self.max_queue} items); retry shortly",
                                 retry_after=self._retry_after())
            self._groups.setdefault(group, collections.deque()).extend(items)
            self._size += len(items)
            self._cond.notify_all()
        return [item.future for item in items]

    def discard(self, group: Hashable) -> int:
        """Drop every waiting item of a group (its request ended or gave up); returns how many."""
        with self._cond:
            items = self._groups.pop(group, None) or ()
            self._size -= len(items)
        for item in items:
            item.future.cancel()
        return len(items)

    @contextlib.contextmanager
    def expecting(self):
        """Announce a request whose items are being prepared: batches wait for it, up to max_wait_ms.

        With nothing announced, a batch closes as soon as the queue is empty, so a lone request
        never pays the batching wait (at concurrency 1 it would add max_wait_ms to every call).
        """
        with self._expected_lock:
            self._expected += 1
        try:
            yield
        finally:
            with self._expected_lock:
                self._expected -= 1

    @staticmethod
    def gather(futures: Sequence[Future], timeout_s: float) -> list[Any]:
        """Wait for all futures; on timeout cancel the rest and raise DeadlineExceeded."""
        give_up_at = time.monotonic() + timeout_s
        results = []
        try:
            for future in futures:
                results.append(future.result(timeout=max(0.0, give_up_at - time.monotonic())))
        except FutureTimeout:
            for future in futures:
                future.cancel()  # not started yet -> the batcher skips it
            raise DeadlineExceeded(f"no result within {timeout_s:g} s; the service is busy") from None
        return results

    # ---- health ----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """starting | ready | failed (start-up raised) | dead (thread gone) | stopped."""
        if self._state == "ready" and not self._thread.is_alive():
            return "dead"
        return self._state

    def health(self) -> tuple[bool, Reason | None]:
        """(healthy, reason when not) — the truth /health reports."""
        state = self.state
        if state == "starting":
            return False, Reason("loading", "model is loading")
        if state == "failed":
            return False, Reason("load_failed", f"model failed to start: {self._failure}")
        if state in ("dead", "stopped"):
            return False, Reason("inference_thread_dead" if state == "dead" else "stopped",
                                 f"inference thread is {state}" + (f": {self._failure}" if self._failure else ""))
        busy_since = self._busy_since
        # Hung, not just slow: ten times the slowest batch so far (the warm-up batch is full
        # size, so this is calibrated from the start), and never less than stuck_after_s.
        limit = max(self.stuck_after_s, 10 * self.stats.longest_batch_s)
        if busy_since is not None and time.monotonic() - busy_since > limit:
            return False, Reason("batch_hung", f"a batch has been running for over {limit:g} s")
        if self.stats.consecutive_failures >= self.unhealthy_after_failures:
            return False, Reason("batches_failing", f"the last {self.stats.consecutive_failures} batches "
                                                    f"failed: {self.stats.last_error}")
        return True, None

    def record_batch_time(self, seconds: float) -> None:
        """Note how long a successful batch took (the hang detector's yardstick)."""
        self.stats.longest_batch_s = max(self.stats.longest_batch_s, seconds)

    def queue_depth(self) -> int:
        """Items waiting for the model."""
        return self._size

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after the current batch; items still queued get NotReady."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def ensure_accepting(self) -> None:
        """Raise NotReady (503 + Retry-After) unless the model thread is serving."""
        state = self.state
        if state == "ready":
            return
        ok, reason = self.health()
        if ok:
            return  # start-up finished between the two reads
        raise NotReady(f"not ready: {reason}", reason=reason.code, retry_after=5 if state == "starting" else 30)

    def wait_started(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for start-up to end (ready or failed); True if it has."""
        return self._started.wait(max(0.0, timeout_s))

    def when_startup_fails(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the model thread) if start-up fails; at once if it already has."""
        with self._cond:  # registered before the failure or called now, never both
            failed = self._state == "failed"
            if not failed:
                self._on_startup_failure.append(callback)
        if failed:
            callback()

    def _retry_after(self) -> int:
        # A rough time for the queue to drain: depth / batch size batches of ~1 s.
        return max(1, min(30, self.queue_depth() // max(1, self.max_batch_size)))

    # ---- model-thread side -----------------------------------------------------------------

    def _main(self) -> None:
        try:
            if self._startup is not None:
                self._startup()
        except BaseException as err:  # noqa: BLE001 - any start-up failure must show in /health
            with self._cond:
                self._failure = f"{type(err).__name__}: {err}"
                self._state = "failed"
            log.exception("%s start-up failed", self.name)
            self._fail_pending(NotReady(f"not ready: model failed to start: {self._failure}", reason="load_failed"))
            self._started.set()
            for callback in list(self._on_startup_failure):
                callback()
            return
        self._state = "ready"
        self._started.set()
        try:
            while not self._stopping.is_set():
                batch = self._collect()
                if batch:
                    self._execute(batch)
        except BaseException as err:  # noqa: BLE001 - a bug here must not leave waiters hanging
            self._failure = f"{type(err).__name__}: {err}"
            log.exception("%s thread died", self.name)  # logged; the thread ends here
        finally:
            self._started.set()
            if self._stopping.is_set():
                self._state = "stopped"
            # Waiters learn only that the thread is gone; the code is the one clients got before
            # codes came from here (shutdown included), so their retry logic sees no change.
            self._fail_pending(NotReady(f"not ready: inference thread stopped ({self._failure or 'shutdown'})",
                                        reason="inference_thread_dead"))

    def _collect(self) -> list[_Item]:
        with self._cond:
            if not self._size:
                self._cond.wait(0.1)  # short, so stop() is noticed quickly
            self._drop_dead()
            if not self._groups:
                return []
            first_group = next(iter(self._groups))
            key = self._groups[first_group][0].key
            batch: list[_Item] = []
            close_at = time.monotonic() + self.max_wait_s
            while True:
                self._fill(batch, key)
                remaining = close_at - time.monotonic()
                # Wait only while more items are on their way and the window is open.
                if len(batch) >= self.max_batch_size or remaining <= 0 or self._expected <= 0:
                    break
                self._cond.wait(remaining)
            if first_group in self._groups:  # the group that led this batch goes to the back
                self._groups[first_group] = self._groups.pop(first_group)
            return batch

    def _fill(self, batch: list[_Item], key: Hashable) -> None:
        """Round-robin passes over the groups, one item of ``key`` from each per pass (lock held)."""
        while len(batch) < self.max_batch_size:
            took = False
            for group in list(self._groups):
                waiting = self._groups[group]
                index = next((i for i, item in enumerate(waiting) if item.key == key), None)
                if index is None:
                    continue
                batch.append(waiting[index])
                del waiting[index]
                self._size -= 1
                took = True
                if not waiting:
                    del self._groups[group]
                if len(batch) >= self.max_batch_size:
                    return
            if not took:
                return

    def _drop_dead(self) -> None:
        """Resolve and remove waiting items that were cancelled or whose deadline passed (lock held)."""
        now = time.monotonic()
        for group in list(self._groups):
            waiting = self._groups[group]
            alive = collections.deque()
            for item in waiting:
                if item.future.cancelled():
                    continue
                if now > item.deadline:
                    if item.future.set_running_or_notify_cancel():
                        self.stats.expired_items += 1
                        item.future.set_exception(DeadlineExceeded("timed out waiting for the model"))
                    continue
                alive.append(item)
            self._size -= len(waiting) - len(alive)
            if alive:
                self._groups[group] = alive
            else:
                del self._groups[group]

    def _execute(self, batch: list[_Item]) -> None:
        live = self._runnable(batch, started=False)
        if live:
            self._run(live[0].key, live)

    def _runnable(self, items: list[_Item], started: bool) -> list[_Item]:
        """The items still wanted: cancelled ones skipped, expired ones answered 504."""
        now = time.monotonic()
        live: list[_Item] = []
        for item in items:
            if not started and not item.future.set_running_or_notify_cancel():
                continue  # its waiter gave up (cancelled)
            if now > item.deadline:
                self.stats.expired_items += 1
                item.future.set_exception(DeadlineExceeded("timed out waiting for the model"))
                continue
            live.append(item)
        return live

    def _run(self, key: Hashable, live: list[_Item]) -> None:
        """One model call for ``live`` (all running); an OOM splits it (see ``_out_of_memory``)."""
        started = self._busy_since = time.monotonic()
        try:
            results = list(self.run_batch(key, [item.payload for item in live]))
            if len(results) != len(live):
                raise RuntimeError(f"backend returned {len(results)} results for {len(live)} inputs")
        except BaseException as err:  # noqa: BLE001 - one bad batch must not take the service down
            self._busy_since = None
            if isinstance(err, Exception) and self.out_of_memory(err):
                self._out_of_memory(key, live, err)
                return
            self.stats.failed_batches += 1
            self.stats.consecutive_failures += 1
            self.stats.last_error = f"{type(err).__name__}: {err}"
            log.exception("batch of %d failed (key=%s)", len(live), key)
            for item in live:
                item.future.set_exception(InferenceFailed(f"inference failed: {self.stats.last_error}"))
            if not isinstance(err, Exception):
                raise  # SystemExit/KeyboardInterrupt: resolve this batch, then let the thread end
            return
        elapsed = time.monotonic() - started
        self._busy_since = None
        self.record_batch_time(elapsed)
        self.stats.batches += 1
        self.stats.items += len(live)
        self.stats.batch_sizes[len(live)] += 1
        self.stats.consecutive_failures = 0
        log.debug("batch done", extra={"batch_size": len(live), "batch_key": str(key),
                                       "latency_ms": round(elapsed * 1000, 1)})
        for item, result in zip(live, results):
            item.future.batch_size = len(live)  # read by the request log line
            if isinstance(result, BaseException):
                item.future.set_exception(result)  # a per-item error (e.g. one bad input)
            else:
                item.future.set_result(result)

    def shrink_to(self, limit: int) -> None:
        """Lower the batch limit after an OOM (never raises it); /health and metrics show it."""
        if limit < self.max_batch_size:
            self.shrunk_from = self.shrunk_from or self.max_batch_size
            self.max_batch_size = max(1, limit)

    def _out_of_memory(self, key: Hashable, live: list[_Item], err: Exception) -> None:
        """Free the cache, then run each half again (recursively, down to one item); shrink the limit.

        Halving keeps every item's work: a batch of 32 that does not fit costs at most log2(32)
        extra calls for its largest pieces, and the limit drops to the size that was tried last,
        so the next batches do not run out of memory again while the pressure lasts.
        """
        self.stats.last_error = f"{type(err).__name__}: {err}"
        try:
            self.free_memory()
        except Exception:  # noqa: BLE001 - freeing is best effort; the split still helps
            log.exception("freeing accelerator memory failed")
        if len(live) == 1:
            self.stats.oom_failed_items += 1
            self.stats.failed_batches += 1
            self.stats.consecutive_failures += 1
            log.error("one item ran out of memory alone (key=%s): %s", key, self.stats.last_error)
            live[0].future.set_exception(OutOfMemory(
                "the accelerator ran out of memory for this input alone; retry later or send a smaller one",
                retry_after=OOM_RETRY_AFTER_S))
            return
        half = len(live) // 2
        self.stats.oom_splits += 1
        self.shrink_to(half)
        log.warning("batch of %d ran out of memory; split in halves, batch limit now %d (key=%s)",
                    len(live), self.max_batch_size, key)
        for part in (live[:half], live[half:]):
            part = self._runnable(part, started=True)
            if part:
                self._run(key, part)

    def _fail_pending(self, error: Exception) -> None:
        with self._cond:
            pending = [item for waiting in self._groups.values() for item in waiting]
            self._groups.clear()
            self._size = 0
        for item in pending:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(error)
