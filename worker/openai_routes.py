"""OpenAI-compatible routes of the Whisper worker: transcriptions, translations and the model list.

Transcriptions are /transcribe's route body (its file documented as 'file', OpenAI's name) and
translations the same with task=translate (worker/routes.py). The work is
``worker.service.WhisperService``, as for every other entry point.
"""

from __future__ import annotations

from flask import Blueprint

from core.deferred.async_jobs import JOB_ACCEPTED
from core.web.model_list import add_model_list
from core.web.openapi import operation
from core.web.service_app import current_service
from worker import routes  # one route body for transcriptions and translations
from worker.schemas import OPTION_FIELDS, TRANSCRIPT_CONTENT, audio_part, multilingual, query_options, upload_form

bp = Blueprint("whisper_openai", __name__)
TRANSLATION_FIELDS = ("model", "prompt", "response_format", "temperature", "language", "callback_url")


@bp.post("/v1/audio/transcriptions")
@operation("Transcribe one recording (OpenAI's transcriptions API)",
           request={"multipart/form-data": upload_form("file", tuple(OPTION_FIELDS))}, parameters=query_options(),
           responses={200: ("The transcript in the requested format.", TRANSCRIPT_CONTENT), **JOB_ACCEPTED},
           errors=(400, 413, 415, 500, 503, 504), tags=["openai"], encoding=audio_part("file"))
def transcriptions():
    """OpenAI's POST /v1/audio/transcriptions: /transcribe, the file as 'file' (or 'audio')."""
    return routes.answer_transcription()


@bp.post("/v1/audio/translations")
@operation("Translate speech to English text (OpenAI's translations API)",
           request={"multipart/form-data": upload_form("file", TRANSLATION_FIELDS)},
           responses={200: ("The English transcript in the requested format.", TRANSCRIPT_CONTENT), **JOB_ACCEPTED},
           errors=(400, 413, 415, 500, 503, 504), tags=["openai"], encoding=audio_part("file"),
           offered=multilingual)  # documented only where the model can translate (400 otherwise)
def translations():
    """OpenAI's POST /v1/audio/translations: task=translate; a 400 on English-only models."""
    return routes.answer_transcription(task="translate")


add_model_list(bp, "whisper-worker", lambda: (current_service().runner.backend.name, {}))
