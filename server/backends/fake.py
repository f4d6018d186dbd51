"""A fake CLIP backend (``CLIP_MODEL=fake``): real decoding, hash-derived vectors, no torch.

Every HTTP, batching and error test can run in milliseconds with it: images still go through the
real decoder (so bad input is still rejected for real), and equal inputs give equal vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable

import numpy as np

from core.model.fake_faults import simulate_forward, simulate_load
from server.backends.base import ClipBackend, l2_normalize
from server.images import ImageSpec

FAKE_DIM = 64


class FakeClipBackend(ClipBackend):
    """Deterministic unit vectors from a hash of each preprocessed input."""

    def load(self) -> None:
        simulate_load()  # FAKE_LOAD_DELAY_S / FAKE_LOAD_FAILURES: staged faults for reliability tests
        self.image_spec = ImageSpec(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        self.context_length = 77
        self.dim = FAKE_DIM

    def tokenize(self, text: str) -> np.ndarray:
        ids = np.frombuffer(text.encode("utf-8")[: self.context_length], dtype=np.uint8)
        return np.pad(ids.astype(np.int64), (0, self.context_length - len(ids)))

    def forward(self, kind: Hashable, batch: list[np.ndarray]) -> list[np.ndarray]:
        simulate_forward(len(batch))  # FAKE_BATCH_DELAY_S, FAKE_OOM_ABOVE
        vectors = []
        for item in batch:
            seed = int.from_bytes(hashlib.sha256(item.tobytes()).digest()[:8], "little")
            vectors.append(np.random.default_rng(seed).standard_normal(FAKE_DIM))
        return list(l2_normalize(np.stack(vectors)))
