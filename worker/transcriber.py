"""One transcription request, end to end, as one unit of work on the core's runner (``ModelRunner.work()``).

decode (upload -> int16 PCM) and prepare (VAD: where the chunks are) run on the request thread;
each chunk's features are made when the runner has room for it and queued as one batch item
among other requests' items; a chunk whose text fails Whisper's checks goes back at the next
temperature (worker/fallback.py) on its own, while the rest of the recording moves on; the
backend assembles the chosen results into segments. One deadline (REQUEST_TIMEOUT_S) covers all
of it -- language detection and every temperature round -- and whatever is still queued when the
request ends is dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from core.model.runner import ModelRunner, Work
from worker.audio import AudioUpload
from worker.fallback import best_attempt, next_temperature
from worker.formats import Transcript
from worker.options import TranscribeOptions
from worker.whisper_types import DETECT, Chunk, ChunkResult, DecodeKey, PreparedAudio

Reserve = Callable[[int], AbstractContextManager]


def no_budget(_nbytes: int) -> AbstractContextManager:
    """Admit everything: for callers with no budget (unit tests); the app, events and jobs pass the
    process's decode-memory budget (DECODE_MEMORY_BUDGET_MB)."""
    return contextlib.nullcontext()


@dataclass
class _Pending:
    """One chunk on its way through the temperatures."""

    index: int
    chunk: Chunk


class Transcriber:
    """Turns an upload and its options into a Transcript through the runner's front door."""

    def __init__(self, runner: ModelRunner, reserve: Reserve = no_budget):
        self.runner = runner
        self.backend = runner.backend
        # reserve(nbytes) holds decode memory for the whole request (429 when the instance is full).
        self.reserve = reserve

    def transcribe(self, data: bytes, options: TranscribeOptions) -> Transcript:
        """Upload bytes -> Transcript (raises ServiceErrors for bad input, overload or timeout)."""
        with self.runner.work() as work:  # 503 while loading; one deadline from here on
            with self._admitted(data) as upload:
                with work.preparing():  # batches being built wait for this request's first chunk
                    decoded = upload.decode()
                    prepared: PreparedAudio = self.backend.prepare(decoded, options.vad_filter)
                    first = self.backend.preprocess(None, (prepared, prepared.plans[0])) if prepared.plans else None
                return self._transcribe(work, decoded.warnings, prepared, first, options)

    def check(self, data: bytes) -> None:
        """Decode the upload as ``transcribe`` would, within the same budget: raises the same 4xx
        (bad audio, too long, 413 ``input_too_large_to_decode``) or 429. For callback_url jobs,
        before their 202."""
        with self._admitted(data) as upload:
            upload.decode()

    @contextlib.contextmanager
    def _admitted(self, data: bytes) -> Iterator[AudioUpload]:
        """The opened upload, its decoded size held in the memory budget for the block.

        MEMORY BUDGET: the one place a request's decoded-audio memory is reserved, from the header
        alone and before decoding (core/model/admission.py's MemoryBudget.reserve); 413/429 from there.
        """
        with AudioUpload(data, self.runner.settings.max_audio_seconds) as upload, self.reserve(upload.decoded_bytes):
            yield upload

    def _transcribe(self, work: Work, warnings: list[str], prepared: PreparedAudio, first: Chunk | None,
                    options: TranscribeOptions) -> Transcript:
        language, probability = self._language(work, first, options)
        transcript = Transcript(language=language, language_probability=probability,
                                duration=prepared.duration, segments=[], task=options.task,
                                warnings=list(warnings))
        if first is None:
            return transcript  # silence: nothing for the model to invent text from

        def key(temperature: float) -> DecodeKey:
            return DecodeKey(language, options.task, options.beam_size, temperature,
                             options.initial_prompt, options.word_timestamps)

        temperatures = options.temperatures
        attempts: list[list[ChunkResult]] = [[] for _ in prepared.plans]

        def chunks():
            yield key(temperatures[0]), first, _Pending(0, first)
            for index in range(1, len(prepared.plans)):
                chunk = self.backend.preprocess(None, (prepared, prepared.plans[index]))
                yield key(temperatures[0]), chunk, _Pending(index, chunk)

        def follow_up(pending: _Pending, result: ChunkResult):
            attempts[pending.index].append(result)
            hotter = next_temperature(temperatures, attempts[pending.index])
            return None if hotter is None else (key(hotter), pending.chunk, pending)

        for _ in work.stream(chunks(), follow_up):
            pass
        chosen = [best_attempt(chunk_attempts) for chunk_attempts in attempts]
        transcript.segments = self.backend.assemble(prepared, chosen, key(temperatures[0]))
        return transcript

    def _language(self, work: Work, first: Chunk | None, options: TranscribeOptions) -> tuple[str, float]:
        if options.language:
            return options.language, 1.0
        if not self.backend.multilingual:
            return "en", 1.0
        if first is None:
            return "en", 0.0  # nothing to listen to; report low confidence
        # Detection is batched too: the first 30 s of speech of each waiting request in one call.
        (detected,) = work.run(DETECT, [first])
        return detected
