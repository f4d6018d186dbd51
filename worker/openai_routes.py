"""OpenAI-compatible routes of the Whisper worker: translations and the model list.

/v1/audio/transcriptions is /transcribe's alias (worker/routes.py). The work is
``worker.service.WhisperService``, as for every other entry point.
"""

from __future__ import annotations

from flask import Blueprint, current_app, request

from core.async_jobs import JOB_ACCEPTED, answer, callback_url_from
from core.model_list import add_model_list
from core.openapi import operation
from worker.routes import _upload as read_upload  # one reading of uploads for both routes
from worker.routes import transcript_response, transcript_result
from worker.schemas import TRANSCRIPT_CONTENT, upload_form
from worker.service import WhisperService

bp = Blueprint("whisper_openai", __name__)
TRANSLATION_FIELDS = ("model", "prompt", "response_format", "temperature", "language", "callback_url")


def _service() -> WhisperService:
    return current_app.extensions["whisper_service"]


@bp.post("/v1/audio/translations")
@operation("Translate speech to English text (OpenAI's translations API)",
           request={"multipart/form-data": upload_form(TRANSLATION_FIELDS)},
           responses={200: ("The English transcript in the requested format.", TRANSCRIPT_CONTENT), **JOB_ACCEPTED},
           errors=(400, 413, 415, 500, 503, 504), tags=["openai"])
def translations():
    """OpenAI's POST /v1/audio/translations: task=translate; a 400 on English-only models."""
    service = _service()
    raw = {**request.args.to_dict(flat=False), **request.form.to_dict(flat=False)}
    callback_url = callback_url_from(raw)
    # Options first: on an English-only model the 400 names the real problem, whatever the upload.
    options = service.options({**raw, "task": ["translate"]})
    data = read_upload()
    return answer(lambda: service.transcribe(data, options), callback_url,
                  respond=lambda transcript: transcript_response(service, transcript, options),
                  to_result=lambda transcript: transcript_result(service, transcript, options.response_format),
                  validate=lambda: service.check_audio(data))


add_model_list(bp, "whisper-worker", lambda: (_service().runner.backend.name, {}))
