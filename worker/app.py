"""The Whisper transcription worker, declared: the core builds its app, launcher, job and contract from this."""

from __future__ import annotations

from core.declaration import Declaration, JobDeclaration, Option
from worker.backends import make_backend
from worker.events import audio_handler
from worker.job import transcribe_file
from worker.service import WhisperService
from worker.settings import WorkerSettings

AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".mp4", ".flac", ".ogg", ".oga", ".opus", ".webm", ".aac", ".mkv",
                  ".mov", ".wma", ".amr")

WHISPER = Declaration(
    name="whisper", package="worker", service_name="whisper-worker", title="Whisper transcription worker",
    description="Speech to text with faster-whisper (CTranslate2).",
    settings=WorkerSettings, make_backend=make_backend,
    make_service=lambda runner, settings, budget: WhisperService(runner, settings, reserve=budget.reserve),
    routes=("worker.routes", "worker.openai_routes"), units=("audio_seconds",),
    events=audio_handler,
    # Whole-file uploads to the HTTP route are capped by the request limit; a job reads from storage,
    # so it takes larger files (the duration limit, MAX_AUDIO_SECONDS, still applies).
    job=JobDeclaration(suffixes=AUDIO_SUFFIXES, unit="files", run=transcribe_file, results="files",
                       prepare=lambda service, raw: service.options(raw), max_input_bytes=2 * 1024 ** 3),
    # One process per GPU: a Whisper replica is large (3 GB for large-v3 in fp16) and the worker's CPU
    # side per 30 s window is a few percent of the GPU's time for it (docs/performance.md, "Feeding the GPU").
    processes_per_gpu=1,
    options=(Option("--model", "WHISPER_MODEL", "WHISPER_MODEL: tiny.en, small, large-v3, or a model directory"),
             Option("--device", "WHISPER_DEVICE", "WHISPER_DEVICE: auto, cuda, cpu")),
)
create_app = WHISPER.create_app  # gunicorn's entry: worker.app:create_app()
