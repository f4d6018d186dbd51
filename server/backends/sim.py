"""A simulated accelerator (``CLIP_MODEL=sim:ViT-B-32``): the real CPU side, a modelled GPU side.

What is real: image decoding and preprocessing at the model's input size (224 px for ViT-B-32,
through ``server.images`` like every backend), the batcher, and output vectors of the model's real
size (512 floats), deterministic per input. What is modelled: the forward step. It holds one
lock shared by every process on the instance, as one GPU time-sliced between processes would be,
and while holding it sleeps ``SIM_BATCH_BASE_MS + SIM_PER_ITEM_MS x batch`` with the GIL released.

The lock is ``fcntl.flock`` on ``SIM_LOCK_PATH``, opened in ``load()``, i.e. after gunicorn's fork
and in every process on its own: flock excludes between open file descriptions, so descriptors
inherited across a fork would share one lock and not exclude each other, and a
``multiprocessing`` semaphore would have to exist before the fork, in the gunicorn master, which
never imports the app. The kernel drops the lock when a process dies, as a GPU context goes away
with its process. The same file counts the busy time (updated under the lock), so a benchmark can
report the simulated GPU's busy fraction across all processes (``read_busy``).

Default timing (ViT-B-32, fp16, L4; no published L4 figure for this model was found):
- per item: ViT-B/32 at 224 px is ~4.4 G multiply-adds = ~8.8 GFLOP per image (open_clip's
  model profile); the L4 datasheet gives 121 TFLOPS dense fp16 tensor (242 with sparsity). At
  ~30% of peak, typical of eager PyTorch on a small ViT, that is 121e12 x 0.3 / 8.8e9 = ~4,100
  images/s, i.e. ~0.25 ms per image. (clip-as-service's 286 images/s on a TITAN RTX x 0.93, the L4's
  fp16 compute ratio to it, = 266/s is a whole-service figure bounded by its 4 preprocessing threads,
  so it only bounds the GPU from below.)
- per batch: ~3 ms, the launch-bound floor of eager PyTorch on a 12-layer ViT (a few hundred kernel
  launches at ~10 us each), so batch 32 takes 3 + 32 x 0.25 = 11 ms = ~2,900 images/s.
Other architectures keep their real input size and output width; set SIM_* for their timing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import time
from collections.abc import Hashable
from contextlib import contextmanager

import numpy as np

from core.model.backend import GPU_BATCH_SIZE
from server.backends.base import ClipBackend, l2_normalize
from server.images import ImageSpec
from server.models import ALIASES

# open_clip's OpenAI CLIP preprocessing constants, the same for every architecture below.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# architecture -> (input size in px, embedding width)
SIM_MODELS = {"ViT-B-32": (224, 512), "ViT-B-16": (224, 512), "ViT-L-14": (224, 768),
              "ViT-L-14-336": (336, 768)}
CONTEXT_LENGTH = 77
# The counter at the start of the lock file (little-endian): seconds the lock was held, seconds of
# modelled GPU time (a + b x n summed; less than held when a loaded host wakes the sleeper late),
# forward calls, items.
_COUNTER = struct.Struct("<ddqq")
_ZERO = (0.0, 0.0, 0, 0)


@contextmanager
def gpu_lock(fd: int):
    """Hold the instance-wide simulated GPU (an exclusive flock on ``fd``)."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def read_busy(path: str) -> tuple[float, float, int, int]:
    """(held seconds, modelled GPU seconds, forward calls, items) so far, across all processes."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return _ZERO
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        raw = os.pread(fd, _COUNTER.size, 0)
    finally:
        os.close(fd)
    return _COUNTER.unpack(raw) if len(raw) == _COUNTER.size else _ZERO


def _seed(item: np.ndarray) -> int:
    # Every 8th pixel in both axes is enough to tell real images apart, and hashing it costs ~10 us
    # instead of ~0.5 ms for all 600 KB of a 224-px array: the sim must not add CPU a GPU would not.
    sample = item[:, ::8, ::8] if item.ndim == 3 else item
    digest = hashlib.blake2b(np.ascontiguousarray(sample).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class SimClipBackend(ClipBackend):
    """Real preprocessing; forward = instance-wide lock + sleep(a + b x batch); hash-seeded vectors."""

    def load(self) -> None:
        name = self.spec.name.split(":", 1)[1].strip()
        name = ALIASES.get(name.lower(), name)
        if name not in SIM_MODELS:
            raise ValueError(f"CLIP_MODEL={self.spec.name}: the simulator knows {', '.join(SIM_MODELS)}")
        size, self.dim = SIM_MODELS[name]
        self.image_spec = ImageSpec(size=size, mean=OPENAI_MEAN, std=OPENAI_STD)
        self.context_length = CONTEXT_LENGTH
        self.device = "sim"
        self.dtype = "float16"
        self.base_s = self.settings.sim_batch_base_ms / 1000.0
        self.per_item_s = self.settings.sim_per_item_ms / 1000.0
        # Opened here, after the fork, in each process (see the module docstring).
        self._lock_fd = os.open(self.settings.sim_lock_path, os.O_RDWR | os.O_CREAT, 0o666)

    def default_batch_size(self) -> int:
        return GPU_BATCH_SIZE  # it stands in for a GPU

    def tokenize(self, text: str) -> np.ndarray:
        # A byte-level stand-in: open_clip's BPE would import torch into every process (~2 s,
        # ~250 MB each); the benchmark's requests are images.
        ids = np.frombuffer(text.encode("utf-8")[: CONTEXT_LENGTH], dtype=np.uint8)
        return np.pad(ids.astype(np.int64), (0, CONTEXT_LENGTH - len(ids)))

    def forward(self, kind: Hashable, batch: list[np.ndarray]) -> list[np.ndarray]:
        vectors = np.stack([np.random.default_rng(_seed(item)).standard_normal(self.dim, dtype=np.float32)
                            for item in batch])
        modelled = self.base_s + self.per_item_s * len(batch)
        with gpu_lock(self._lock_fd):
            started = time.monotonic()
            time.sleep(modelled)  # releases the GIL
            held = time.monotonic() - started
            raw = os.pread(self._lock_fd, _COUNTER.size, 0)
            counts = _COUNTER.unpack(raw) if len(raw) == _COUNTER.size else _ZERO
            os.pwrite(self._lock_fd, _COUNTER.pack(counts[0] + held, counts[1] + modelled, counts[2] + 1,
                                                   counts[3] + len(batch)), 0)
        return list(l2_normalize(vectors))

    def describe(self) -> dict:
        return {**super().describe(), "simulated": {"batch_base_ms": self.settings.sim_batch_base_ms,
                                                    "per_item_ms": self.settings.sim_per_item_ms,
                                                    "lock_path": self.settings.sim_lock_path}}
