"""HTTP routes of the Whisper worker: /transcribe (and its OpenAI-compatible alias).

Routes only read the request and render the answer; the work is ``worker.service.WhisperService``.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, request

from core.deferred.async_jobs import JOB_ACCEPTED, answer, callback_url_from
from core.errors import InvalidInput
from core.web.openapi import operation
from core.web.service_app import current_service
from core.web.uploads import upload_bytes
from worker.formats import Transcript
from worker.schemas import OPTION_FIELDS, TRANSCRIPT_CONTENT, query_options, upload_form
from worker.service import WhisperService

bp = Blueprint("whisper", __name__)
AUDIO_FIELDS = ("audio", "file")  # "file" is what OpenAI clients send


def read_upload() -> bytes:
    """The one audio file of a multipart request (as 'audio' or OpenAI's 'file'); 4xx otherwise."""
    if request.mimetype != "multipart/form-data":
        raise InvalidInput("send the audio as multipart/form-data: -F audio=@meeting.m4a", code="no_input")
    names = list(request.files)
    unexpected = [name for name in names if name not in AUDIO_FIELDS]
    if unexpected:
        raise InvalidInput(f"unexpected file field '{unexpected[0]}'; send the audio as 'audio' "
                           "(or 'file')", code="unknown_field")
    uploads = [f for name in AUDIO_FIELDS for f in request.files.getlist(name)]
    if not uploads:
        raise InvalidInput("no audio: send the file as -F audio=@meeting.m4a", code="no_input")
    if len(uploads) > 1:
        raise InvalidInput("send one audio file per request", code="too_many_inputs")
    return upload_bytes(uploads[0])


@bp.post("/transcribe")
@bp.post("/v1/audio/transcriptions")
@operation("Transcribe one recording", request={"multipart/form-data": upload_form(tuple(OPTION_FIELDS))},
           parameters=query_options(tuple(OPTION_FIELDS)),
           responses={200: ("The transcript in the requested format.", TRANSCRIPT_CONTENT), **JOB_ACCEPTED},
           errors=(400, 413, 415, 500, 503, 504))
def transcribe():
    """Transcribe one uploaded recording; options as form fields or query parameters."""
    return answer_transcription()


def answer_transcription(task: str | None = None):
    """The one route body for transcriptions and translations (``task`` forces the option).

    Options first: on an English-only model a translation's 400 names the real problem, whatever
    the upload. The upload is read in full here: a callback_url job outlives the request.
    """
    service: WhisperService = current_service()
    fields = {**request.args.to_dict(flat=False), **request.form.to_dict(flat=False)}
    callback_url = callback_url_from(fields)
    options = service.options({**fields, "task": [task]} if task else fields)
    data = read_upload()
    return answer(lambda: service.transcribe(data, options), callback_url,
                  respond=lambda transcript: transcript_response(service, transcript, options),
                  to_result=lambda transcript: transcript_result(service, transcript, options.response_format),
                  validate=lambda: service.check_audio(data))


def transcript_response(service: WhisperService, transcript: Transcript, options) -> Response:
    """The synchronous answer: the transcript rendered in the requested format."""
    body, content_type = service.render(transcript, options.response_format)
    return Response(body, content_type=content_type)


def transcript_result(service: WhisperService, transcript: Transcript, response_format: str) -> dict:
    """A callback body: the JSON formats as they are; text/srt/vtt under a key named for the format."""
    body, content_type = service.render(transcript, response_format)
    if response_format in ("json", "verbose_json"):
        return json.loads(body)
    return {"response_format": response_format, "content_type": content_type, response_format: body}
