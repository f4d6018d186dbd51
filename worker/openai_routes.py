"""OpenAI-compatible routes of the Whisper worker: translations and the model list.

/v1/audio/transcriptions is /transcribe's alias and translations is the same route body with
task=translate (worker/routes.py). The work is ``worker.service.WhisperService``, as for every
other entry point.
"""

from __future__ import annotations

from flask import Blueprint

from core.deferred.async_jobs import JOB_ACCEPTED
from core.web.model_list import add_model_list
from core.web.openapi import operation
from core.web.service_app import current_service
from worker import routes  # one route body for transcriptions and translations
from worker.schemas import TRANSCRIPT_CONTENT, upload_form

bp = Blueprint("whisper_openai", __name__)
TRANSLATION_FIELDS = ("model", "prompt", "response_format", "temperature", "language", "callback_url")


@bp.post("/v1/audio/translations")
@operation("Translate speech to English text (OpenAI's translations API)",
           request={"multipart/form-data": upload_form(TRANSLATION_FIELDS)},
           responses={200: ("The English transcript in the requested format.", TRANSCRIPT_CONTENT), **JOB_ACCEPTED},
           errors=(400, 413, 415, 500, 503, 504), tags=["openai"])
def translations():
    """OpenAI's POST /v1/audio/translations: task=translate; a 400 on English-only models."""
    return routes.answer_transcription(task="translate")


add_model_list(bp, "whisper-worker", lambda: (current_service().runner.backend.name, {}))
