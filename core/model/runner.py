"""The protocol every model backend implements, and the runner that drives one with a Batcher.

A backend is split by *where* each step runs:

- ``load()`` and ``forward()`` run only on the batcher thread, which owns the model (and CUDA);
- ``preprocess()`` and ``postprocess()`` run on the request threads, in parallel, and must not
  touch the model: decoding, resizing, tokenising, formatting. Keeping them off the model thread
  is what lets a GPU stay busy while the CPU decodes the next requests.

``kind`` names a batch family: items of different kinds never share a ``forward`` call (CLIP's
"image" and "text"; a Whisper decoding configuration).
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from typing import Any, Protocol

from core import request_context
from core.errors import DeadlineExceeded, Overloaded, Reason
from core.model import instance
from core.model.batcher import Batcher, is_out_of_memory
from core.settings import CoreSettings

# A request's items in flight at once, in batches: enough to keep the model busy between the
# request thread's refills, few enough that a long input never holds all of its features at once.
IN_FLIGHT_BATCHES = 2
# How long a waiter keeps waiting past the deadline for a batch that already started.
RUNNING_GRACE_S = 1.0
# Under gunicorn a process whose model failed to load stops taking connections at once and exits;
# gunicorn starts another, whose boot and load are the back-off. Any wait here would only let the
# failed process answer 503 to requests its siblings could serve.
LOAD_RETRY_DELAY_S = 0.0
# A load that runs out of GPU memory is retried in the process this often, after 1, 2, 4 s.
LOAD_OOM_RETRIES = 3
LOAD_OOM_BACKOFF_S = 1.0

log = logging.getLogger("core.model.runner")


class Backend(Protocol):
    """What the core needs from a model backend (see the module docstring for threads;
    core/model/backend.py's BaseBackend has a default for all but ``load`` and ``forward``).

    ``name`` (and any other fact a request is validated against, such as ``multilingual`` or
    ``dim``) is an attribute set in ``__init__``, before ``load()``: requests arriving while the
    model loads are validated and answered 503, never crash on a missing attribute.
    """

    name: str

    def check_weights(self) -> None:
        """Raise ModelNotBaked now if the weights are not on disk (no loading). At start-up, in the
        launcher's foreground and in each worker before it serves: a missing model fails the boot."""

    def load(self) -> None:
        """Load weights onto the device. Batcher thread, once."""

    def default_batch_size(self) -> int:
        """MAX_BATCH_SIZE when the setting is auto; may depend on the device load() chose."""

    def warmup_batches(self, batch_size: int) -> list[tuple[Hashable, list[Any]]]:
        """(kind, preprocessed items) batches to run once before the service reports ready."""

    def preprocess(self, kind: Hashable, raw: Any) -> Any:
        """Turn one raw input into what forward() consumes. Request threads."""

    def forward(self, kind: Hashable, batch: list[Any]) -> Sequence[Any]:
        """Run the model on a batch; one output per input, in order. Batcher thread."""

    def postprocess(self, kind: Hashable, output: Any) -> Any:
        """Turn one forward() output into the response value. Request threads."""

    def describe(self) -> dict:
        """Model name, device, dim and the like, for /health and logs."""

    # Optional: ``free_memory()`` after a GPU out-of-memory error (default: ``free_accelerator_memory``)
    # and ``is_out_of_memory(err)`` for a runtime whose OOM the default test does not recognise.


# Preprocesses all raws of one kind at once (e.g. on a pool) -> one item per raw, in order.
PreprocessAll = Callable[[Sequence[Any]], Sequence[Any]]

def free_accelerator_memory() -> None:
    """After an OOM: drop garbage and return PyTorch's cached CUDA blocks to the device.

    torch is looked up, never imported: only a backend that already imported it can hold CUDA memory.
    """
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


_current_work: contextvars.ContextVar[Work | None] = contextvars.ContextVar("model_work", default=None)


class Work:
    """One request's work on the runner: one deadline over all its stages, one fair-share group,
    and every item it queued dropped from the queue when it ends, so abandoned work costs no
    model time. Get one with ``ModelRunner.work()``.
    """

    def __init__(self, runner: ModelRunner, deadline: float, batch_sizes: list[int]):
        self.runner = runner
        self.batcher = runner.batcher
        self.deadline = deadline
        self.batch_sizes = batch_sizes  # the request context's: the door logs them
        self.group = object()
        self._futures: list[Future] = []

    def remaining_s(self) -> float:
        """Seconds left before the request's deadline (negative once passed)."""
        return self.deadline - time.monotonic()

    def check_deadline(self) -> None:
        """Raise DeadlineExceeded (504) once the request's deadline has passed."""
        if self.remaining_s() <= 0:
            raise DeadlineExceeded("the request ran out of time (REQUEST_TIMEOUT_S); the service is busy")

    def preparing(self):
        """Context for decoding/preprocessing this request's items: batches being built wait for
        them (up to max_wait_ms) instead of closing without them."""
        return self.batcher.expecting()

    def submit(self, kind: Hashable, items: Sequence[Any]) -> list[Future]:
        """Queue preprocessed items of one kind under this work's deadline and group."""
        self.check_deadline()
        futures = self.batcher.submit_many(items, key=kind, deadline=self.deadline, group=self.group)
        self._futures.extend(futures)
        return futures

    def gather(self, futures: Sequence[Future]) -> list[Any]:
        """Wait for forward() outputs within the deadline; note their batch sizes for the log."""
        outputs = Batcher.gather(futures, timeout_s=max(0.0, self.remaining_s()) + RUNNING_GRACE_S)
        self.batch_sizes.extend(getattr(f, "batch_size", 0) for f in futures)
        return outputs

    def run(self, kind: Hashable, items: Sequence[Any]) -> list[Any]:
        """Queue preprocessed items and wait for their forward() outputs."""
        return self.gather(self.submit(kind, items)) if items else []

    def stream(self, source: Iterable[tuple[Hashable, Any, Any]],
               follow_up: Callable[[Any, Any], tuple[Hashable, Any, Any] | None] | None = None,
               max_in_flight: int | None = None) -> Iterator[tuple[Any, Any]]:
        """Feed (kind, item, tag) from ``source`` lazily, at most ``max_in_flight`` queued at once.

        Yields (tag, output) as results arrive. ``follow_up(tag, output)`` may return another
        (kind, item, tag) to queue (re-submitting a subset, e.g. a hotter temperature). ``source``
        is pulled only when there is room, so a long input's items are made as the model takes
        them, not all up front.
        """
        cap = max_in_flight or IN_FLIGHT_BATCHES * self.batcher.max_batch_size
        source = iter(source)
        waiting: list[tuple[Hashable, Any, Any]] = []  # made, not yet queued (the queue was full)
        in_flight: dict[Future, Any] = {}
        exhausted = False
        while True:
            # Make the items first, then queue them while still "preparing": the batch being
            # built waits for all of them instead of closing on the first one.
            with self.preparing():
                while not exhausted and len(in_flight) + len(waiting) < cap:
                    try:
                        waiting.append(next(source))
                    except StopIteration:
                        exhausted = True
                while waiting and len(in_flight) < cap:
                    kind, item, tag = waiting[0]
                    try:
                        (future,) = self.submit(kind, [item])
                    except Overloaded:
                        if not in_flight:
                            raise  # nothing of ours will free a slot: the service is full
                        break  # wait for our own items to finish, then try again
                    waiting.pop(0)
                    in_flight[future] = tag
            if not in_flight:
                return
            done, _ = wait_futures(list(in_flight), timeout=max(0.0, self.remaining_s()) + RUNNING_GRACE_S,
                                   return_when=FIRST_COMPLETED)
            if not done:
                raise DeadlineExceeded("no result within the request's deadline (REQUEST_TIMEOUT_S); "
                                       "the service is busy")
            for future in [f for f in in_flight if f in done]:  # in submission order
                tag = in_flight.pop(future)
                output = future.result()
                self.batch_sizes.append(getattr(future, "batch_size", 0))
                again = follow_up(tag, output) if follow_up is not None else None
                if again is not None:
                    waiting.insert(0, again)
                yield tag, output

    def close(self) -> None:
        """Drop whatever this work still has waiting (it finished, failed or gave up)."""
        for future in self._futures:
            future.cancel()
        self.batcher.discard(self.group)
        self._futures.clear()


class ModelRunner:
    """Owns a backend and its batcher: loads and warms the model, then batches requests."""

    def __init__(self, backend: Backend, settings: CoreSettings, name: str = "model"):
        self.backend = backend
        self.settings = settings
        self.batcher = Batcher(
            backend.forward,
            max_batch_size=settings.max_batch_size or 1,  # auto is resolved after load()
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            startup=self._startup,
            name=f"{name}-batcher",
            free_memory=getattr(backend, "free_memory", None) or free_accelerator_memory,
            out_of_memory=getattr(backend, "is_out_of_memory", None) or is_out_of_memory,
        )

    def start(self) -> ModelRunner:
        """Begin loading in the background; /health says 'loading' until warm."""
        self.batcher.start()
        return self

    def _startup(self) -> None:
        for attempt in range(LOAD_OOM_RETRIES + 1):
            try:
                self.backend.load()
                break
            except Exception as err:
                # Out of memory while loading: other replicas may be mid-warm-up on the same GPU.
                # Retry here, so requests already waiting for this process keep waiting; any other
                # failure (or OOM after the retries) fails the start-up (and, under gunicorn, the process).
                if attempt == LOAD_OOM_RETRIES or not self.batcher.out_of_memory(err):
                    raise
                delay = LOAD_OOM_BACKOFF_S * 2 ** attempt
                log.warning("model load ran out of memory; retrying in %g s", delay,
                            extra={"error": f"{type(err).__name__}: {err}"})
                self.batcher.free_memory()
                time.sleep(delay)
        if self.settings.max_batch_size is None:
            self.batcher.max_batch_size = self.backend.default_batch_size()
        # One full batch of each kind: allocator, kernels and caches are ready before traffic,
        # and a model that cannot run a batch never reports healthy.
        for kind, items in self.backend.warmup_batches(self.batcher.max_batch_size):
            self._warm_up(kind, items)
        instance.mark_ready()

    def _warm_up(self, kind: Hashable, items: list) -> None:
        """Run one warm-up batch; out of memory, halve it (and the batch limit) until it fits."""
        while True:
            started = time.monotonic()
            try:
                outputs = self.backend.forward(kind, items)
            except Exception as err:
                if len(items) <= 1 or not self.batcher.out_of_memory(err):
                    raise
                self.batcher.free_memory()
                self.batcher.stats.oom_splits += 1
                items = items[: len(items) // 2]
                self.batcher.shrink_to(len(items))
                log.warning("warm-up batch ran out of memory; batch limit now %d", len(items))
                continue
            if len(outputs) != len(items):
                raise RuntimeError(f"warm-up returned {len(outputs)} outputs for {len(items)} inputs")
            self.batcher.record_batch_time(time.monotonic() - started)
            return

    def ensure_ready(self) -> None:
        """Raise NotReady (503 + Retry-After) unless the model is loaded and serving."""
        self.batcher.ensure_accepting()

    def admit(self, deadline: float) -> None:
        """Let a request in: ready, or still loading while a sibling process already serves.

        In the second case the instance has passed its startup probe and traffic arrives here
        too, so the request waits for this process's model until its deadline instead of getting
        503 (core/model/instance.py). Otherwise: NotReady (503 + Retry-After) unless serving.
        """
        if self.batcher.state == "starting" and instance.another_serves():
            log.info("request waits for the model to load (a sibling process serves)")
            self.batcher.wait_started(deadline - time.monotonic())
        self.batcher.ensure_accepting()

    def exit_on_load_failure(self, exit_process: Callable[[], None], delay_s: float = LOAD_RETRY_DELAY_S) -> None:
        """If the model fails to load, call ``exit_process`` after ``delay_s`` (gunicorn retries the process)."""
        def later() -> None:
            log.error("model failed to load; this process exits so that another is started")
            timer = threading.Timer(delay_s, exit_process)
            timer.daemon = True
            timer.start()

        self.batcher.when_startup_fails(later)

    @contextlib.contextmanager
    def work(self, *, deadline: float | None = None) -> Iterator[Work]:
        """One request's work: gates on readiness, shares one deadline, drops its leftovers at exit.

        Nested calls (and ``run``/``run_many`` inside) join the work already open on this thread.
        Otherwise the deadline is the request context's (core/request_context.py): REQUEST_TIMEOUT_S
        from the first stage of the request, whichever door it came through.
        """
        current = _current_work.get()
        if current is not None and current.runner is self:
            yield current
            return
        if deadline is None:
            deadline = request_context.deadline(self.settings.request_timeout_s)
        self.admit(deadline)  # before decoding: no wasted work while loading
        work = Work(self, deadline, request_context.batch_sizes())
        token = _current_work.set(work)
        try:
            yield work
        finally:
            _current_work.reset(token)
            work.close()

    def run(self, kind: Hashable, raws: Sequence[Any], preprocess_all: PreprocessAll | None = None) -> list[Any]:
        """preprocess (this thread) -> batched forward (model thread) -> postprocess (this thread)."""
        return self.run_many({kind: raws}, {kind: preprocess_all} if preprocess_all else None)[kind]

    def run_many(self, raws_by_kind: dict[Hashable, Sequence[Any]],
                 preprocessors: dict[Hashable, PreprocessAll] | None = None) -> dict[Hashable, list[Any]]:
        """Like ``run`` for several kinds at once: all are queued before waiting on any.

        ``preprocessors`` maps a kind to a function that preprocesses all of its raws at once (one
        item per raw, in order), e.g. on a thread pool; other kinds go through
        ``backend.preprocess`` one by one on this thread.
        """
        preprocessors = preprocessors or {}
        with self.work() as work:
            with work.preparing():
                items = {kind: self._preprocess(kind, raws, preprocessors.get(kind))
                         for kind, raws in raws_by_kind.items() if raws}
            futures = {kind: work.submit(kind, batch) for kind, batch in items.items()}
            results = {kind: [self.backend.postprocess(kind, out) for out in work.gather(queued)]
                       for kind, queued in futures.items()}
        return {kind: results.get(kind, []) for kind in raws_by_kind}

    def _preprocess(self, kind: Hashable, raws: Sequence[Any], preprocess_all: PreprocessAll | None) -> list[Any]:
        if preprocess_all is None:
            return [self.backend.preprocess(kind, raw) for raw in raws]
        items = list(preprocess_all(raws))
        if len(items) != len(raws):
            raise RuntimeError(f"preprocessing returned {len(items)} items for {len(raws)} inputs")
        return items

    def health(self) -> tuple[bool, Reason | None, dict]:
        """(ready, reason, details) for /health."""
        ok, reason = self.batcher.health()
        details = {
            **(self.backend.describe() if self.batcher.state == "ready" else {}),
            "batching": {
                # MAX_BATCH_SIZE=auto is resolved by the backend after load(): say "auto" until then,
                # not the placeholder the batcher holds while loading.
                "max_batch_size": self.batcher.max_batch_size if self.batcher.state == "ready" or
                self.settings.max_batch_size else "auto",
                "max_wait_ms": self.settings.max_wait_ms,
                "max_queue": self.settings.max_queue,
                "queue_depth": self.batcher.queue_depth(),
                # Out-of-memory errors lowered the limit: batches stay this small until a restart.
                **({"shrunk_after_oom": {"from": self.batcher.shrunk_from, "to": self.batcher.max_batch_size}}
                   if self.batcher.shrunk_from else {}),
            },
            "stats": self.batcher.stats.snapshot(),
        }
        return ok, reason, details


def gunicorn_post_worker_init(worker) -> None:
    """A worker whose model fails to load leaves, so gunicorn starts a fresh one: never half-ready."""
    runner = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("model_runner")
    if runner is not None:
        runner.exit_on_load_failure(lambda: setattr(worker, "alive", False))  # gthread's loop then ends
