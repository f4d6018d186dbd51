"""``BaseBackend``: defaults for the Backend protocol (core/model/runner.py), so a new model writes
only ``load`` and ``forward`` (and ``preprocess`` when its inputs need work on the request threads).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

# MAX_BATCH_SIZE=auto: a GPU keeps busy with batches of 32 without making the first request of a
# batch wait long; on a CPU throughput stops growing around 8 (bench/clip_bench.py measured CLIP).
GPU_BATCH_SIZE = 32
CPU_BATCH_SIZE = 8


class BaseBackend:
    """A backend with the protocol's defaults; subclasses set ``name`` and ``device`` and implement
    ``load`` (batcher thread) and ``forward`` (one output per input, in order)."""

    name = "model"
    device = "cpu"
    weights: str | None = None  # where the weights come from (for /health, keyed callers only)

    def check_weights(self) -> None:
        """Nothing to check by default; a backend with files on disk raises ModelNotBaked here."""

    def load(self) -> None:
        raise NotImplementedError

    def forward(self, kind: Hashable, batch: list[Any]) -> Sequence[Any]:
        raise NotImplementedError

    def default_batch_size(self) -> int:
        """32 on a GPU, 8 on a CPU."""
        return GPU_BATCH_SIZE if self.device.startswith("cuda") else CPU_BATCH_SIZE

    def warmup_batches(self, batch_size: int) -> list[tuple[Hashable, list[Any]]]:
        """No warm-up batch by default; a real model should run one full batch before it is ready."""
        return []

    def preprocess(self, kind: Hashable, raw: Any) -> Any:
        """The raw input as forward() takes it."""
        return raw

    def postprocess(self, kind: Hashable, output: Any) -> Any:
        """The forward() output as the response value."""
        return output

    def describe(self) -> dict:
        """Model, device and weights, for /health."""
        return {"model": self.name, "device": self.device, "weights": self.weights}
