"""What the Whisper worker does, one method per operation: transcribe this audio with these options.

Every entry point calls these and nothing else: the HTTP routes (/transcribe and its OpenAI alias),
callback_url jobs, /events/* and the batch job (worker/job.py). None of them talks to the batcher
or the backend on its own.
"""

from __future__ import annotations

from collections.abc import Mapping

from core import request_context
from core.model.runner import ModelRunner
from worker.formats import Transcript, render
from worker.options import TranscribeOptions, parse_options
from worker.settings import WorkerSettings
from worker.transcriber import Reserve, Transcriber, no_budget


class WhisperService:
    """The worker's operations on one runner (model + batcher)."""

    def __init__(self, runner: ModelRunner, settings: WorkerSettings, reserve: Reserve = no_budget):
        self.runner = runner
        self.settings = settings
        # reserve(nbytes): the instance's decode-memory budget (e.g. core/model/admission.py's
        # MemoryBudget.reserve); the transcriber calls it once per request, before decoding.
        self.transcriber = Transcriber(runner, reserve)

    def options(self, raw: Mapping[str, list]) -> TranscribeOptions:
        """Validate raw option fields (form, query or JSON, each a list of values); raises 4xx."""
        backend = self.runner.backend
        return parse_options(raw, multilingual=backend.multilingual, model_name=backend.name,
                             default_beam_size=self.settings.default_beam_size)

    def transcribe(self, data: bytes, options: TranscribeOptions) -> Transcript:
        """Upload bytes -> Transcript (raises ServiceErrors for bad input or overload)."""
        transcript = self.transcriber.transcribe(data, options)
        request_context.count(audio_seconds=transcript.duration, segments=len(transcript.segments))
        return transcript

    def check_audio(self, data: bytes) -> None:
        """Decode the upload as a request would, within the memory budget (raises its 4xx, or
        429); for callback_url jobs before their 202."""
        self.transcriber.check(data)

    @staticmethod
    def render(transcript: Transcript, response_format: str) -> tuple[str, str]:
        """Transcript -> (body, content type) in one of the response formats."""
        return render(transcript, response_format)
