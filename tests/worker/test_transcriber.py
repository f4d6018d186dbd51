"""The transcription flow on the fake model: fallback, language detection, one deadline, lazy chunks, fairness.

The fake backend (worker/backends/fake.py) decodes and chunks real audio but replaces Whisper with a
hash, so the flow runs in milliseconds; tiny.en (the only Whisper model available offline) is
English-only and rarely needs a fallback. The real model runs in test_worker_integration.py.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.errors import DeadlineExceeded
from core.model.runner import ModelRunner
from tests.conftest import wait_until
from tests.media import wav_bytes
from worker.backends.fake import FakeWhisperBackend
from worker.fallback import best_attempt, is_silence, needs_fallback, next_temperature
from worker.options import TranscribeOptions
from worker.settings import WorkerSettings
from worker.transcriber import Transcriber
from worker.whisper_types import DETECT, ChunkResult

pytestmark = pytest.mark.unit
ALL_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def result(temperature: float, compression_ratio: float = 1.2, avg_logprob: float = -0.3, text: str = "x"):
    return ChunkResult(subsegments=[{"text": text}], avg_logprob=avg_logprob, no_speech_prob=0.01,
                       compression_ratio=compression_ratio, temperature=temperature, segment_size=100)


class FallbackFake(FakeWhisperBackend):
    """The second 30 s chunk is 'repetitive' until the temperature reaches ``passes_at``."""

    def __init__(self, passes_at: float = 0.4, **kwargs):
        super().__init__(**kwargs)
        self.passes_at = passes_at
        self.calls: list[tuple] = []
        self.made = 0  # chunks whose features were made
        self.made_before_first_batch: int | None = None

    def preprocess(self, kind, raw):
        self.made += 1
        return super().preprocess(kind, raw)

    def forward(self, key, batch):
        if self.made_before_first_batch is None and key != DETECT:
            self.made_before_first_batch = self.made
        self.calls.append((key, [int(chunk.offset) // 30 for chunk in batch]))
        results = super().forward(key, batch)
        if key == DETECT:
            return [("de", 0.93)] * len(batch)
        for chunk, out in zip(batch, results):
            if int(chunk.offset) == 30 and key.temperature < self.passes_at:
                out.compression_ratio = 3.1
            out.subsegments = [dict(s, text=f" chunk{int(chunk.offset) // 30}@{key.temperature}")
                               for s in out.subsegments]
        return results


def make(backend=None, **settings):
    backend = backend or FallbackFake()
    options = dict(max_wait_ms=5.0, log_level="WARNING")
    options.update(settings)
    runner = ModelRunner(backend, WorkerSettings.from_env({}, **options)).start()
    wait_until(lambda: runner.batcher.state == "ready", 5)
    return backend, Transcriber(runner)


def test_only_failing_chunks_are_decoded_again_hotter():
    backend, transcriber = make()
    transcript = transcriber.transcribe(wav_bytes(75), TranscribeOptions(language="en"))
    decode_calls = [(key.temperature, chunks) for key, chunks in backend.calls]
    assert sorted(c for t, chunks in decode_calls if t == 0.0 for c in chunks) == [0, 1, 2]
    assert [(t, chunks) for t, chunks in decode_calls if t > 0] == [(0.2, [1]), (0.4, [1])]
    assert [s.text for s in transcript.segments] == [" chunk0@0.0", " chunk1@0.4", " chunk2@0.0"]


def test_language_is_detected_when_not_given_and_used_for_decoding():
    backend, transcriber = make(FallbackFake(multilingual=True))
    transcript = transcriber.transcribe(wav_bytes(1), TranscribeOptions())
    assert (transcript.language, transcript.language_probability) == ("de", 0.93)
    assert backend.calls[0][0] == DETECT and backend.calls[1][0].language == "de"


def test_language_detection_of_concurrent_requests_shares_a_batch():
    backend, transcriber = make(FallbackFake(multilingual=True), max_wait_ms=300)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: transcriber.transcribe(wav_bytes(1), TranscribeOptions()), range(4)))
    detect_batches = [chunks for key, chunks in backend.calls if key == DETECT]
    assert max(len(chunks) for chunks in detect_batches) >= 2


def test_one_deadline_covers_detection_and_every_temperature_round():
    # Each stage alone fits in the 1 s timeout; together (detection + 6 rounds of 0.3 s) they do
    # not. A fresh deadline per stage (the old behaviour) let the request run for 2+ s.
    backend = FallbackFake(passes_at=2.0, multilingual=True, batch_seconds=0.3)
    _, transcriber = make(backend, request_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        transcriber.transcribe(wav_bytes(45), TranscribeOptions(temperatures=ALL_TEMPERATURES))
    assert time.monotonic() - started < 1.0 + 0.3 + 0.5
    rounds = len([key for key, _ in backend.calls if key != DETECT])
    assert rounds < 1 + 2 + 6  # the last hot rounds never ran
    wait_until(lambda: transcriber.runner.batcher.queue_depth() == 0, 2)  # nothing left behind


def test_chunks_are_made_as_the_batcher_has_room_not_all_at_once():
    backend, transcriber = make(FallbackFake(passes_at=0.0), max_batch_size=2)
    transcript = transcriber.transcribe(wav_bytes(10 * 30), TranscribeOptions(language="en"))
    assert len(transcript.segments) == 10 and backend.made == 10
    assert backend.made_before_first_batch <= 4  # 2 batches in flight, not all 10 chunks' features


def test_a_short_clip_is_not_stuck_behind_a_long_recording():
    backend = FallbackFake(passes_at=0.0, batch_seconds=0.1)
    _, transcriber = make(backend, max_batch_size=2)
    long_done = threading.Event()
    long_audio, clip = wav_bytes(16 * 30, pitch=0.07), wav_bytes(8)

    def long():
        transcriber.transcribe(long_audio, TranscribeOptions(language="en"))
        long_done.set()

    thread = threading.Thread(target=long)
    thread.start()
    wait_until(lambda: len(backend.calls) >= 3, 10)
    started = time.monotonic()
    transcriber.transcribe(clip, TranscribeOptions(language="en"))
    latency = time.monotonic() - started
    assert not long_done.is_set(), "the clip waited for the whole recording"
    assert latency < 0.6  # the running batch and its own (0.1 s each), not the recording's 8 batches
    thread.join(30)


def test_fallback_policy():
    attempts = [result(0.0, compression_ratio=3.0, avg_logprob=-0.1), result(0.2, avg_logprob=-1.5),
                result(0.4, avg_logprob=-1.2), result(0.6, compression_ratio=2.9, avg_logprob=-1.1)]
    assert best_attempt(attempts).temperature == 0.4
    assert best_attempt([result(0.0, avg_logprob=-0.2)]).temperature == 0.0
    assert next_temperature(ALL_TEMPERATURES, attempts[:1]) == 0.2
    assert next_temperature(ALL_TEMPERATURES, [result(0.0)]) is None
    assert next_temperature((0.0, 0.5), attempts[:2]) is None  # no temperature left


def test_silence_skips_the_fallback():
    silent = ChunkResult([{"text": ""}], avg_logprob=-1.4, no_speech_prob=0.9, compression_ratio=1.0,
                         temperature=0.0, segment_size=100)
    assert is_silence(silent) and not needs_fallback(silent)
