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

import time
from collections.abc import Hashable, Sequence
from typing import Any, Protocol

from core.batcher import Batcher
from core.settings import CoreSettings


class Backend(Protocol):
    """What the core needs from a model backend (see the module docstring for threads)."""

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
        )

    def start(self) -> ModelRunner:
        """Begin loading in the background; /health says 'loading' until warm."""
        self.batcher.start()
        return self

    def _startup(self) -> None:
        self.backend.load()
        if self.settings.max_batch_size is None:
            self.batcher.max_batch_size = self.backend.default_batch_size()
        # One full batch of each kind: allocator, kernels and caches are ready before traffic,
        # and a model that cannot run a batch never reports healthy.
        for kind, items in self.backend.warmup_batches(self.batcher.max_batch_size):
            started = time.monotonic()
            outputs = self.backend.forward(kind, items)
            if len(outputs) != len(items):
                raise RuntimeError(f"warm-up returned {len(outputs)} outputs for {len(items)} inputs")
            self.batcher.record_batch_time(time.monotonic() - started)

    def run(self, kind: Hashable, raws: Sequence[Any], batch_sizes: list[int] | None = None) -> list[Any]:
        """preprocess (this thread) -> batched forward (model thread) -> postprocess (this thread)."""
        return self.run_many({kind: raws}, batch_sizes)[kind]

    def run_many(self, raws_by_kind: dict[Hashable, Sequence[Any]],
                 batch_sizes: list[int] | None = None) -> dict[Hashable, list[Any]]:
        """Like ``run`` for several kinds at once: all are queued before waiting on any."""
        self.batcher.ensure_accepting()  # before decoding: no wasted work while loading
        timeout = self.settings.request_timeout_s
        futures: dict[Hashable, list] = {}
        with self.batcher.expecting():
            items = {kind: [self.backend.preprocess(kind, raw) for raw in raws]
                     for kind, raws in raws_by_kind.items() if raws}
            try:
                for kind, batch in items.items():
                    futures[kind] = self.batcher.submit_many(batch, key=kind, timeout_s=timeout)
            except Exception:
                for queued in futures.values():
                    for future in queued:
                        future.cancel()
                raise
        results = {kind: [self.backend.postprocess(kind, out) for out in self._wait(queued, batch_sizes)]
                   for kind, queued in futures.items()}
        return {kind: results.get(kind, []) for kind in raws_by_kind}

    def submit_and_wait(self, kind: Hashable, items: Sequence[Any],
                        batch_sizes: list[int] | None = None) -> list[Any]:
        """Queue already-preprocessed items of one kind and wait for their forward() outputs."""
        futures = self.batcher.submit_many(items, key=kind, timeout_s=self.settings.request_timeout_s)
        return self._wait(futures, batch_sizes)

    def _wait(self, futures: list, batch_sizes: list[int] | None) -> list[Any]:
        """Gather outputs within the request deadline; note the batch sizes for the request log."""
        outputs = Batcher.gather(futures, timeout_s=self.settings.request_timeout_s + 1.0)
        if batch_sizes is not None:
            batch_sizes.extend(getattr(f, "batch_size", 0) for f in futures)
        return outputs

    def health(self) -> tuple[bool, str | None, dict]:
        """(ready, reason, details) for /health."""
        ok, reason = self.batcher.health()
        details = {
            **(self.backend.describe() if self.batcher.state == "ready" else {}),
            "batching": {
                "max_batch_size": self.batcher.max_batch_size,
                "max_wait_ms": self.settings.max_wait_ms,
                "max_queue": self.settings.max_queue,
                "queue_depth": self.batcher.queue_depth(),
            },
            "stats": self.batcher.stats.snapshot(),
        }
        return ok, reason, details
