"""The request-thread half every CLIP backend shares: decode images, tokenise texts, describe.

Subclasses implement ``load`` (weights onto the device; sets ``image_spec``, ``dim``,
``context_length``, ``logit_scale``), ``tokenize`` and ``forward``. Everything here runs on
request threads and never touches the model.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from core.model.backend import BaseBackend
from server.images import ImageSpec, decode_image
from server.models import ClipModelSpec
from server.settings import ServerSettings

IMAGE = "image"
TEXT = "text"

# Texts are cut to this many characters per context token before tokenising: no BPE token is
# longer, so the first ``context_length`` tokens are unchanged, and a 30 MB text cannot stall
# a request thread in the tokenizer.
CHARS_PER_TOKEN_BOUND = 64


class ClipBackend(BaseBackend):
    """Base class: shared preprocessing/postprocessing; subclasses own the model."""

    def __init__(self, settings: ServerSettings, spec: ClipModelSpec):
        self.settings = settings
        self.spec = spec
        self.device = "cpu"
        self.dtype = "float32"
        self.dim: int | None = None
        self.image_spec: ImageSpec | None = None
        self.context_length: int | None = None
        self.logit_scale = 100.0  # CLIP's learned temperature; subclasses read the real one
        self.weights: str | None = None  # where the weights were loaded from (for /health)

    # ---- implemented by subclasses (and load, forward, check_weights: core/model/backend.py) ----
    def tokenize(self, text: str) -> np.ndarray:
        """One text -> int64 token ids of length context_length (truncated)."""
        raise NotImplementedError

    # ---- shared ---------------------------------------------------------------------------
    def preprocess(self, kind: Hashable, raw) -> np.ndarray:
        """Image bytes -> pixel array, or text -> token ids (request threads)."""
        if kind == IMAGE:
            return decode_image(raw, self.image_spec, self.settings.max_image_pixels)
        return self.tokenize(raw[: CHARS_PER_TOKEN_BOUND * self.context_length])

    def warmup_batches(self, batch_size: int) -> list[tuple[str, list[np.ndarray]]]:
        size = self.image_spec.size
        pixels = np.zeros((3, size, size), dtype=np.float32)
        tokens = self.tokenize("a photo used to warm up the model")
        return [(IMAGE, [pixels] * batch_size), (TEXT, [tokens] * batch_size)]

    def describe(self) -> dict:
        return {
            "model": self.spec.label,
            "family": self.spec.family,
            "device": self.device,
            "dtype": self.dtype,
            "dim": self.dim,
            "image_size": self.image_spec.size if self.image_spec else None,
            "context_length": self.context_length,
            "weights": self.weights,
            "preprocessing": self.image_spec.published() if self.image_spec else None,
        }


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
