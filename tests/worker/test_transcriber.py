"""The transcription flow with a stub model: temperature fallback and batched language detection.

A stub stands in for the model here because tiny.en (the only Whisper model available offline) is
English-only and rarely needs a fallback; the real model runs in test_worker_integration.py.
"""

from __future__ import annotations

import io
import threading
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from core.backend import ModelRunner
from tests.conftest import wait_until
from worker.formats import Segment
from worker.options import TranscribeOptions
from worker.settings import WorkerSettings
from worker.transcriber import Transcriber
from worker.whisper_backend import DETECT, Chunk, ChunkResult, PreparedAudio, best_attempt

pytestmark = pytest.mark.unit


def wav_bytes(seconds: float) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        tone = (np.sin(np.arange(int(16000 * seconds)) * 0.05) * 8000).astype(np.int16)
        out.writeframes(tone.tobytes())
    return buffer.getvalue()


def result(temperature: float, compression_ratio: float = 1.2, avg_logprob: float = -0.3, text: str = "x"):
    return ChunkResult(subsegments=[{"text": text}], avg_logprob=avg_logprob, no_speech_prob=0.01,
                       compression_ratio=compression_ratio, temperature=temperature, segment_size=100)


class StubWhisper:
    """One chunk per second of audio; chunk 1 is 'repetitive' until the temperature reaches 0.4."""

    multilingual = True
    name = "stub"

    def __init__(self):
        self.calls: list[tuple] = []
        self.lock = threading.Lock()

    def load(self):
        pass

    def default_batch_size(self):
        return 8

    def warmup_batches(self, batch_size):
        return []

    def describe(self):
        return {"model": self.name}

    def preprocess(self, kind, raw):
        decoded, _vad = raw
        seconds = int(round(decoded.duration))
        return PreparedAudio([Chunk(np.full((2, 2), n, np.float32), float(n), 1.0) for n in range(seconds)],
                             decoded.duration, None)

    def forward(self, key, batch):
        with self.lock:
            self.calls.append((key, [int(chunk[0, 0]) if key == DETECT else int(chunk.features[0, 0])
                                     for chunk in batch]))
        if key == DETECT:
            return [("de", 0.93)] * len(batch)
        return [result(key.temperature, compression_ratio=3.1 if chunk.offset == 1 and key.temperature < 0.4 else 1.2,
                       text=f"chunk{int(chunk.offset)}@{key.temperature}") for chunk in batch]

    def postprocess(self, key, output):
        prepared, chosen = output
        return [Segment(n, float(n), float(n + 1), r.subsegments[0]["text"], r.avg_logprob, r.no_speech_prob,
                        r.compression_ratio, r.temperature) for n, r in enumerate(chosen)]


def make(max_wait_ms=5.0):
    backend = StubWhisper()
    settings = WorkerSettings.from_env({}, max_wait_ms=max_wait_ms, log_level="WARNING")
    runner = ModelRunner(backend, settings).start()
    wait_until(lambda: runner.batcher.state == "ready", 5)
    return backend, Transcriber(runner)


def test_only_failing_chunks_are_decoded_again_hotter():
    backend, transcriber = make()
    transcript = transcriber.transcribe(wav_bytes(3), TranscribeOptions(language="en"), [])
    decode_calls = [(key.temperature, chunks) for key, chunks in backend.calls]
    assert decode_calls == [(0.0, [0, 1, 2]), (0.2, [1]), (0.4, [1])]
    assert [s.text for s in transcript.segments] == ["chunk0@0.0", "chunk1@0.4", "chunk2@0.0"]


def test_language_is_detected_when_not_given_and_used_for_decoding():
    backend, transcriber = make()
    transcript = transcriber.transcribe(wav_bytes(1), TranscribeOptions(), [])
    assert (transcript.language, transcript.language_probability) == ("de", 0.93)
    assert backend.calls[0][0] == DETECT and backend.calls[1][0].language == "de"


def test_language_detection_of_concurrent_requests_shares_a_batch():
    backend, transcriber = make(max_wait_ms=300)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: transcriber.transcribe(wav_bytes(1), TranscribeOptions(), []), range(4)))
    detect_batches = [chunks for key, chunks in backend.calls if key == DETECT]
    assert max(len(chunks) for chunks in detect_batches) >= 2


def test_when_every_temperature_fails_the_most_likely_non_repetitive_attempt_wins():
    attempts = [result(0.0, compression_ratio=3.0, avg_logprob=-0.1), result(0.2, avg_logprob=-1.5),
                result(0.4, avg_logprob=-1.2), result(0.6, compression_ratio=2.9, avg_logprob=-1.1)]
    assert best_attempt(attempts).temperature == 0.4
    assert best_attempt([result(0.0, avg_logprob=-0.2)]).temperature == 0.0


def test_silence_skips_the_fallback():
    silent = ChunkResult([{"text": ""}], avg_logprob=-1.4, no_speech_prob=0.9, compression_ratio=1.0,
                         temperature=0.0, segment_size=100)
    assert silent.is_silence and not silent.needs_fallback
