"""JSON Schemas of the Whisper worker's requests and responses, for the routes' ``@operation``s.

Every rule ``worker.options`` and the routes enforce is here too (a schemathesis run in the tests
checks it): one audio file as 'audio' or 'file', the option values each accepts, and what the
loaded model allows (only en and transcribe on an English-only model, whose document then leaves
/v1/audio/translations out).
"""

from __future__ import annotations

from core.deferred.async_jobs import CALLBACK_URL_SCHEMA
from core.web.openapi import OMIT, FromApp, callback_field, query, resolved
from worker.languages import LANGUAGE_CODES
from worker.options import MAX_BEAM_SIZE, MAX_PROMPT_CHARS, MAX_TEMPERATURES, RESPONSE_FORMATS, TASKS

BINARY = {"type": "string", "format": "binary"}
# What ffmpeg reads (any container with an audio track); the fuzz sends WAV (tests/openapi_media.py).
AUDIO_MEDIA_TYPES = ("audio/wav", "audio/mpeg", "audio/mp4", "audio/ogg", "audio/webm", "audio/flac", "video/mp4",
                     "video/webm")
BOOLEAN_TEXT = {"enum": ["true", "false", "1", "0", "yes", "no", "on", "off"]}
_TEMPERATURE = r"(?:0(?:\.[0-9]+)?|1(?:\.0+)?|\.[0-9]+)"  # 0 to 1, as float() reads it


def multilingual(app) -> bool:
    """Whether the app's model is multilingual (known before it loads, from its vocabulary)."""
    return app.extensions["model_runner"].backend.multilingual


# An English-only model takes language en (or none) and task transcribe only: 400 otherwise.
LANGUAGE = FromApp(lambda app: {"enum": ["", *LANGUAGE_CODES] if multilingual(app) else ["", "en"]})
TASK = FromApp(lambda app: {"enum": list(TASKS) if multilingual(app) else ["transcribe"]})
OPTION_FIELDS = {
    "language": (LANGUAGE, "ISO 639-1 code; detected when absent or empty. English-only models take only en."),
    "task": (TASK, "transcribe, or translate (to English; multilingual models only)."),
    "response_format": ({"enum": list(RESPONSE_FORMATS)}, "json, verbose_json, text, srt or vtt."),
    "word_timestamps": (BOOLEAN_TEXT, "true or false: per-word times in verbose_json."),
    "vad_filter": (BOOLEAN_TEXT, "true or false: remove silence first (default true)."),
    "beam_size": ({"enum": [str(n) for n in range(1, MAX_BEAM_SIZE + 1)]}, f"1-{MAX_BEAM_SIZE}."),
    "temperature": ({"type": "string", "pattern": rf"^{_TEMPERATURE}(?:,{_TEMPERATURE}){{0,{MAX_TEMPERATURES - 1}}}$"},
                    f"0-1, or a comma-separated list of up to {MAX_TEMPERATURES}."),
    "initial_prompt": ({"type": "string", "maxLength": MAX_PROMPT_CHARS}, "Vocabulary hint."),
    "prompt": ({"type": "string", "maxLength": MAX_PROMPT_CHARS}, "Same as initial_prompt (OpenAI's name)."),
    "timestamp_granularities[]": ({"type": "string"}, "word asks for word times (OpenAI's way)."),
    "timestamp_granularities": ({"type": "string"}, "Same as timestamp_granularities[]."),
    "model": ({"type": "string"}, "Accepted and ignored: the service serves one model."),
    "stream": ({"type": "string"}, "Accepted and ignored: responses are never streamed."),
    "callback_url": (callback_field(CALLBACK_URL_SCHEMA), CALLBACK_URL_SCHEMA["description"]),
}


def upload_form(field: str, options: tuple[str, ...]) -> dict:
    """The multipart body: one audio file as ``field``, plus option fields.

    Each route documents one name for the file, 'audio' (/transcribe) or OpenAI's 'file'; both
    routes take either (not both). A document with the two as alternatives (oneOf) is exact too,
    but schemathesis 4.32.5 cannot generate invalid bodies from it (ValueError: Unsupported type:
    'Binary'), so the fuzz could not check the refusals.
    """
    properties = {field: BINARY}
    properties.update({name: _described(*OPTION_FIELDS[name]) for name in options})
    return {"type": "object", "properties": properties, "required": [field], "additionalProperties": False}


def audio_part(field: str) -> dict:
    """The multipart ``encoding`` of the audio part: the media types it takes."""
    return {field: {"contentType": ", ".join(AUDIO_MEDIA_TYPES)}}


# Options documented as query parameters too: those with short values. gunicorn refuses a request
# line over 4094 bytes (414, before the app), so free text (prompts, URLs) is documented in the form
# only; the route still reads every option from the query.
QUERY_OPTIONS = ("language", "task", "response_format", "word_timestamps", "vad_filter", "beam_size", "temperature")


def query_options(options: tuple[str, ...] = QUERY_OPTIONS) -> list:
    """Options as query parameters."""
    return [_when_offered(OPTION_FIELDS[name][0], lambda schema, name=name: query(name, schema, OPTION_FIELDS[name][1]))
            for name in options]


def _described(schema, description: str):
    """``schema`` with its description."""
    return _when_offered(schema, lambda resolved_schema: {**resolved_schema, "description": description})


def _when_offered(schema, build):
    """``build(schema)``, once ``schema`` is resolved with the app; left out where it resolves to nothing."""
    if not isinstance(schema, FromApp):
        return build(schema)
    return FromApp(lambda app: OMIT if (value := resolved(schema, app)) is OMIT else build(value))


SEGMENT = {
    "type": "object",
    "required": ["id", "start", "end", "text"],
    "properties": {"id": {"type": "integer"}, "start": {"type": "number"}, "end": {"type": "number"},
                   "text": {"type": "string"}, "avg_logprob": {"type": "number"},
                   "no_speech_prob": {"type": "number"}, "compression_ratio": {"type": "number"},
                   "temperature": {"type": "number"},
                   "words": {"type": "array", "items": {
                       "type": "object", "required": ["word", "start", "end", "probability"],
                       "properties": {"word": {"type": "string"}, "start": {"type": "number"},
                                      "end": {"type": "number"}, "probability": {"type": "number"}}}}},
}
TRANSCRIPT_JSON = {
    "type": "object",
    "required": ["text", "language", "language_probability", "duration", "segments"],
    "properties": {"text": {"type": "string"}, "language": {"type": "string"},
                   "language_probability": {"type": "number"}, "duration": {"type": "number"},
                   "segments": {"type": "array", "items": SEGMENT}, "task": {"enum": list(TASKS)},
                   "warnings": {"type": "array", "items": {"type": "string"}}},
}
TRANSCRIPT_CONTENT = {
    "application/json": TRANSCRIPT_JSON,
    "text/plain": {"type": "string"},
    "application/x-subrip": {"type": "string"},
    "text/vtt": {"type": "string"},
}
