"""WHISPER_MODEL=fake: a stand-in model for tests -- real decoding and chunking, text from a hash.

Like infinity's dummy model: every HTTP, batching, deadline and error path of the worker runs in
milliseconds without loading Whisper. Each 30 s chunk's "transcript" is a few words derived from
the SHA-256 of its samples, so the same audio always gives the same text and different audio
different text; a chunk of digital silence gives none.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time

import numpy as np

from core.model.backend import BaseBackend
from core.model.fake_faults import simulate_forward, simulate_load
from worker.audio import SAMPLE_RATE, DecodedAudio
from worker.backends.whisper_backend import clamp_segments, fixed_windows
from worker.formats import Segment
from worker.whisper_types import DETECT, Chunk, ChunkPlan, ChunkResult, DecodeKey, PreparedAudio

FAKE_MODEL = "fake"
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
         "kilo", "lima", "mike", "november", "oscar", "papa")
SILENCE_LEVEL = 8  # int16 peak below which a chunk counts as silence


class FakeWhisperBackend(BaseBackend):
    """The WhisperBackend interface with a hash for a model (English-only, like tiny.en)."""

    def __init__(self, settings=None, *, batch_seconds: float = 0.0, multilingual: bool = False):
        self.settings = settings
        self.name = FAKE_MODEL
        self.multilingual = multilingual
        self.batch_seconds = batch_seconds  # simulated model time per batch (benchmarks, timing tests)
        self.batches: list[tuple[object, list[int]]] = []  # (key, request ids), for tests
        self._lock = threading.Lock()
        self._request_ids = itertools.count(1)

    def check_weights(self) -> None:
        """Nothing to bake."""

    def load(self) -> None:
        """Nothing to load, unless a fault is staged (FAKE_LOAD_DELAY_S / FAKE_LOAD_FAILURES)."""
        simulate_load()

    def default_batch_size(self) -> int:
        return 8

    def warmup_batches(self, batch_size: int) -> list:
        return []

    def describe(self) -> dict:
        return {"model": self.name, "device": "cpu", "compute_type": "none", "multilingual": self.multilingual}

    def prepare(self, decoded: DecodedAudio, vad_filter: bool) -> PreparedAudio:
        """Fixed 30 s windows (the fake needs no VAD)."""
        pcm = decoded.samples
        return PreparedAudio(pcm, fixed_windows(len(pcm)), decoded.duration, None, next(self._request_ids))

    def preprocess(self, kind, raw: tuple[PreparedAudio, ChunkPlan]) -> Chunk:
        prepared, plan = raw
        (start, end), = plan.ranges
        return Chunk(np.ascontiguousarray(prepared.samples[start:end]), plan.offset, plan.duration, prepared.request)

    def postprocess(self, kind, output: ChunkResult) -> ChunkResult:
        return output

    def forward(self, key, batch: list[Chunk]) -> list:
        simulate_forward(len(batch))  # FAKE_BATCH_DELAY_S, FAKE_OOM_ABOVE (before recording: ``batches`` ran)
        with self._lock:
            self.batches.append((key, [chunk.request for chunk in batch]))
        if self.batch_seconds:
            time.sleep(self.batch_seconds)
        if key == DETECT:
            return [("en", 1.0)] * len(batch)
        return [self._result(key, chunk) for chunk in batch]

    @staticmethod
    def text_of(samples: np.ndarray) -> str:
        """The fake transcript of some int16 samples: four words picked by their hash."""
        digest = hashlib.sha256(samples.tobytes()).digest()
        return " " + " ".join(WORDS[b % len(WORDS)] for b in digest[:4]) + "."

    def _result(self, key: DecodeKey, chunk: Chunk) -> ChunkResult:
        samples = chunk.features
        silent = samples.size == 0 or int(np.abs(samples.astype(np.int32)).max()) < SILENCE_LEVEL
        subsegments = [] if silent else [{"start": chunk.offset, "end": chunk.offset + chunk.duration,
                                          "text": self.text_of(samples), "tokens": []}]
        return ChunkResult(subsegments=subsegments, avg_logprob=-0.1, no_speech_prob=0.9 if silent else 0.01,
                           compression_ratio=1.0, temperature=key.temperature,
                           segment_size=int(chunk.duration * SAMPLE_RATE))

    def assemble(self, prepared: PreparedAudio, chosen: list[ChunkResult], key: DecodeKey) -> list[Segment]:
        segments = [dict(sub, avg_logprob=r.avg_logprob, no_speech_prob=r.no_speech_prob,
                         compression_ratio=r.compression_ratio, temperature=r.temperature,
                         words=[{"start": sub["start"], "end": sub["end"], "word": sub["text"], "probability": 1.0}]
                         if key.word_timestamps else None)
                    for r in chosen for sub in r.subsegments]
        return clamp_segments(segments, prepared.duration)
