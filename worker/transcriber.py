"""One transcription request, end to end, on the shared batcher.

decode (upload -> samples) and preprocess (VAD, features) run here on the request thread; the
chunks go to the batcher, where they share model calls with other requests' chunks; chunks whose
text fails Whisper's checks go back at the next temperature; postprocess builds the segments.
"""

from __future__ import annotations

from core.backend import ModelRunner
from worker.audio import decode_audio
from worker.formats import Transcript
from worker.options import TranscribeOptions
from worker.whisper_backend import DETECT, ChunkResult, DecodeKey, PreparedAudio, best_attempt


class Transcriber:
    """Turns an upload and its options into a Transcript using the runner's batcher."""

    def __init__(self, runner: ModelRunner):
        self.runner = runner
        self.backend = runner.backend

    def transcribe(self, data: bytes, options: TranscribeOptions, batch_sizes: list[int]) -> Transcript:
        """Upload bytes -> Transcript (raises ServiceErrors for bad input or overload)."""
        self.runner.batcher.ensure_accepting()  # before decoding: no wasted work while loading
        with self.runner.batcher.expecting():  # batches being built wait for this one's chunks
            decoded = decode_audio(data, self.runner.settings.max_audio_seconds)
            prepared: PreparedAudio = self.backend.preprocess(None, (decoded, options.vad_filter))
        language, probability = self._language(prepared, options, batch_sizes)
        transcript = Transcript(language=language, language_probability=probability,
                                duration=decoded.duration, segments=[], task=options.task,
                                warnings=list(decoded.warnings))
        if not prepared.chunks:
            return transcript  # silence: nothing for the model to invent text from
        key = None
        attempts: list[list[ChunkResult]] = [[] for _ in prepared.chunks]
        pending = list(range(len(prepared.chunks)))
        for n, temperature in enumerate(options.temperatures):
            key = DecodeKey(language, options.task, options.beam_size, temperature,
                            options.initial_prompt, options.word_timestamps)
            results = self.runner.submit_and_wait(key, [prepared.chunks[i] for i in pending], batch_sizes)
            is_last = n == len(options.temperatures) - 1
            retry = []
            for index, result in zip(pending, results):
                attempts[index].append(result)
                if result.needs_fallback and not is_last:
                    retry.append(index)
            pending = retry
            if not pending:
                break
        chosen = [best_attempt(chunk_attempts) for chunk_attempts in attempts]
        # Word timing needs each chosen attempt's tokenizer; all share language/task, so any key works.
        transcript.segments = self.backend.postprocess(key, (prepared, chosen))
        return transcript

    def _language(self, prepared: PreparedAudio, options: TranscribeOptions,
                  batch_sizes: list[int]) -> tuple[str, float]:
        if options.language:
            return options.language, 1.0
        if not self.backend.multilingual:
            return "en", 1.0
        if not prepared.chunks:
            return "en", 0.0  # nothing to listen to; report low confidence
        # Detection is batched too: the first 30 s of speech of each waiting request in one call.
        (detected,) = self.runner.submit_and_wait(DETECT, [prepared.chunks[0].features], batch_sizes)
        return detected
