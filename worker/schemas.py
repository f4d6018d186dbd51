"""JSON Schemas of the Whisper worker's requests and responses, for the routes' ``@operation``s."""

from __future__ import annotations

from core.deferred.async_jobs import CALLBACK_URL_SCHEMA
from core.web.openapi import query
from worker.options import RESPONSE_FORMATS, TASKS

BINARY = {"type": "string", "format": "binary"}
OPTION_FIELDS = {
    "language": ({"type": "string"}, "ISO 639-1 code; detected when absent. English-only models take only en."),
    "task": ({"enum": list(TASKS)}, "transcribe, or translate (to English; multilingual models only)."),
    "response_format": ({"enum": list(RESPONSE_FORMATS)}, "json, verbose_json, text, srt or vtt."),
    "word_timestamps": ({"type": "string"}, "true or false: per-word times in verbose_json."),
    "vad_filter": ({"type": "string"}, "true or false: remove silence first (default true)."),
    "beam_size": ({"type": "string"}, "1-10."),
    "temperature": ({"type": "string"}, "0-1, or a comma-separated list."),
    "initial_prompt": ({"type": "string"}, "Vocabulary hint."),
    "prompt": ({"type": "string"}, "Same as initial_prompt (OpenAI's name)."),
    "timestamp_granularities[]": ({"type": "string"}, "word asks for word times (OpenAI's way)."),
    "timestamp_granularities": ({"type": "string"}, "Same as timestamp_granularities[]."),
    "model": ({"type": "string"}, "Accepted and ignored: the service serves one model."),
    "stream": ({"type": "string"}, "Accepted and ignored: responses are never streamed."),
    "callback_url": (CALLBACK_URL_SCHEMA, CALLBACK_URL_SCHEMA["description"]),
}


def upload_form(options: tuple[str, ...]) -> dict:
    """The multipart body: one audio file as 'audio' or 'file', plus option fields."""
    properties = {"audio": BINARY, "file": BINARY}
    properties.update({name: {**OPTION_FIELDS[name][0], "description": OPTION_FIELDS[name][1]} for name in options})
    return {"type": "object", "properties": properties, "additionalProperties": False}


def query_options(options: tuple[str, ...]) -> list[dict]:
    """The same options as query parameters."""
    return [query(name, *OPTION_FIELDS[name]) for name in options]


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
