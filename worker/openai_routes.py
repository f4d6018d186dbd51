"""OpenAI-compatible routes of the Whisper worker: translations and the model list.

/v1/audio/transcriptions is /transcribe's alias (worker/routes.py). The work is
``worker.service.WhisperService``, as for every other entry point.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request

from core.async_jobs import JOB_ACCEPTED, answer, callback_url_from
from core.openapi import MODEL_LIST_SCHEMA, json_content, operation
from worker.routes import _upload as read_upload  # one reading of uploads for both routes
from worker.routes import transcript_response, transcript_result
from worker.schemas import TRANSCRIPT_CONTENT, upload_form
from worker.service import WhisperService

bp = Blueprint("whisper_openai", __name__)
TRANSLATION_FIELDS = ("model", "prompt", "response_format", "temperature", "language", "callback_url")
STARTED = int(time.time())  # /v1/models' "created": when this process started serving the model


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
    return answer(lambda sizes: service.transcribe(data, options, sizes), callback_url,
                  respond=lambda transcript: transcript_response(service, transcript, options),
                  to_result=lambda transcript: transcript_result(service, transcript, options.response_format),
                  validate=lambda: service.check_audio(data))


@bp.get("/v1/models")
@operation("The model this service serves (OpenAI's models API)",
           responses={200: ("A list with the one loaded model.", json_content(MODEL_LIST_SCHEMA))}, tags=["openai"])
def models():
    """OpenAI's GET /v1/models: the one Whisper model (any model name is accepted on requests)."""
    model_id = _service().runner.backend.name
    return jsonify({"object": "list", "data": [{"id": model_id, "object": "model", "created": STARTED,
                                                "owned_by": "whisper-worker"}]})
