"""Pick the Whisper backend a configuration names (faster-whisper is imported only for real models)."""

from __future__ import annotations

from worker.settings import WorkerSettings

__all__ = ["make_backend"]


def make_backend(settings: WorkerSettings):
    """WHISPER_MODEL=fake -> FakeWhisperBackend, else WhisperBackend (faster-whisper)."""
    from worker.backends.fake import FAKE_MODEL

    if settings.whisper_model == FAKE_MODEL:
        from worker.backends.fake import FakeWhisperBackend

        return FakeWhisperBackend(settings)
    from worker.backends.whisper_backend import WhisperBackend

    return WhisperBackend(settings)
