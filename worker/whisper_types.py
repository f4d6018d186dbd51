"""The values that travel between the Whisper transcriber, the batcher and the model backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK_SECONDS = 30  # Whisper's window
DETECT = "detect-language"  # batch kind for language detection


@dataclass(frozen=True)
class DecodeKey:
    """Everything that must be equal for chunks to share one model call."""

    language: str
    task: str
    beam_size: int
    temperature: float
    initial_prompt: str | None
    word_timestamps: bool


@dataclass(frozen=True)
class ChunkPlan:
    """Where one <= 30 s chunk comes from: sample ranges of the request's PCM, and its timeline."""

    ranges: tuple[tuple[int, int], ...]  # [start, end) samples, concatenated in order
    offset: float  # seconds on the (VAD-joined) timeline
    duration: float


@dataclass
class Chunk:
    """One <= 30 s piece of a request, ready for the model: features plus its place in time."""

    features: np.ndarray  # (n_mels, frames) float32, unpadded: padding happens per window
    offset: float
    duration: float
    request: int = 0  # which request it belongs to (packing keeps a request's chunks apart)


@dataclass
class PreparedAudio:
    """A request's audio after VAD: the PCM and where its chunks are, features not made yet.

    Features (about 1 MB per chunk) are made one chunk at a time as the batcher has room, so
    an hour-long recording never holds all of its ~120 chunks' features at once.
    """

    samples: np.ndarray  # int16 PCM at 16 kHz, as decoded
    plans: list[ChunkPlan]
    duration: float
    speech_timestamps: list[dict] | None  # VAD regions (samples) to map times back; None = no VAD
    request: int = 0


@dataclass
class ChunkResult:
    """What the model thread returns for one chunk."""

    subsegments: list[dict]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    segment_size: int
    alignment: list[dict] | None = None
