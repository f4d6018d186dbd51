"""LRU cache of label-prompt embeddings for /classify: the same labels arrive again and again.

Keyed on what the model actually sees, the prompt's truncated token ids, not the raw string:
two prompts that differ only past the context length share one entry, and a megabyte-long
prompt costs a few hundred bytes of key instead of a megabyte (a 200 KB request used to park
300 MB of prompt strings here). Bounded in bytes (LABEL_CACHE_MB) as well as in entries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

# Python's own cost per entry beyond key and vector bytes: the bytes and ndarray headers and
# the OrderedDict slot, measured with sys.getsizeof on a 77-token key and a 512-d vector.
ENTRY_OVERHEAD_BYTES = 250


class LabelCache:
    """Thread-safe LRU from a prompt's token ids to its unit embedding, bounded in bytes."""

    def __init__(self, capacity: int, max_bytes: int | None = None):
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def entry_bytes(key: bytes, vector: np.ndarray) -> int:
        """What one entry costs against ``max_bytes``."""
        return len(key) + vector.nbytes + ENTRY_OVERHEAD_BYTES

    def get_many(self, prompts: list[str], compute: Callable[[list[str]], list[np.ndarray]],
                 key: Callable[[str], bytes] | None = None) -> np.ndarray:
        """Embeddings for ``prompts`` (in order), computing only the missing ones, once each.

        ``key`` maps a prompt to what the model sees (its token ids as bytes); default: its UTF-8.
        """
        keys = [key(p) if key else p.encode("utf-8") for p in prompts]
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for k in keys:
                if k in self._entries:
                    self._entries.move_to_end(k)
                    found[k] = self._entries[k]
            self.hits += sum(1 for k in keys if k in found)
        missing = {k: p for k, p in zip(keys, prompts) if k not in found}  # one prompt per key
        if missing:
            vectors = compute(list(missing.values()))
            found.update(zip(missing, vectors))
            with self._lock:
                self.misses += len(missing)
                for k, vector in zip(missing, vectors):
                    self._store(k, vector)
        return np.stack([found[k] for k in keys])

    def _store(self, key: bytes, vector: np.ndarray) -> None:
        if self.capacity < 1:
            return
        cost = self.entry_bytes(key, vector)
        if self.max_bytes is not None and cost > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= self.entry_bytes(key, old)
        self._entries[key] = vector
        self.nbytes += cost
        while len(self._entries) > self.capacity or (self.max_bytes is not None and self.nbytes > self.max_bytes):
            evicted_key, evicted = self._entries.popitem(last=False)
            self.nbytes -= self.entry_bytes(evicted_key, evicted)
