"""LRU cache of label-prompt embeddings for /classify: the same labels arrive again and again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class LabelCache:
    """Thread-safe LRU from prompt text to its unit embedding."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_many(self, prompts: list[str], compute: Callable[[list[str]], list[np.ndarray]]) -> np.ndarray:
        """Embeddings for ``prompts`` (in order), computing only the missing ones, once each."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for prompt in prompts:
                if prompt in self._entries:
                    self._entries.move_to_end(prompt)
                    found[prompt] = self._entries[prompt]
            self.hits += len(found)
        missing = list(dict.fromkeys(p for p in prompts if p not in found))
        if missing:
            vectors = compute(missing)
            found.update(zip(missing, vectors))
            with self._lock:
                self.misses += len(missing)
                for prompt, vector in zip(missing, vectors):
                    self._entries[prompt] = vector
                    self._entries.move_to_end(prompt)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
        return np.stack([found[p] for p in prompts])
