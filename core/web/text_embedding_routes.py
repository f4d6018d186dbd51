"""HTTP routes of any text-embedding service (core/model/text_embedding.py): ``POST /embed``,
OpenAI's ``POST /v1/embeddings`` and ``GET /v1/models``, each with ``callback_url``.

The official ``openai`` SDKs work unchanged with ``base_url=<service>/v1``; ``usage`` counts the
model's real tokens. A text model's app lists this module in its Declaration's routes.
"""

from __future__ import annotations

from flask import Blueprint

from core.deferred.async_jobs import CALLBACK_FIELD, CALLBACK_URL_SCHEMA, JOB_ACCEPTED, answer, callback_url_from
from core.web.encoding import ENCODING_FORMATS, check_dimensions, json_response
from core.web.json_body import choice, read_json_object
from core.web.model_list import add_model_list
from core.web.openapi import json_content, operation
from core.web.service_app import current_service

bp = Blueprint("text_embedding", __name__)

TEXT = {"type": "string", "minLength": 1, "pattern": r"\S", "description": "Not empty or only white space."}
TEXTS = {"anyOf": [TEXT, {"type": "array", "items": TEXT, "minItems": 1}],
         "description": "One text or a list (at most MAX_INPUTS); each at most the model's token limit."}
ENCODING = {"enum": list(ENCODING_FORMATS), "default": "float",
            "description": "base64: each vector as base64 of little-endian float32 bytes."}
VECTOR = {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}],
          "description": "L2-normalised embedding (a string with encoding_format=base64)."}
EMBED_REQUEST = {"type": "object", "required": ["texts"], "additionalProperties": False,
                 "properties": {"texts": TEXTS, "encoding_format": ENCODING, CALLBACK_FIELD: CALLBACK_URL_SCHEMA}}
EMBED_RESPONSE = {"type": "object", "required": ["model", "dim", "embeddings", "usage"], "properties": {
    "model": {"type": "string"}, "dim": {"type": "integer"}, "embeddings": {"type": "array", "items": VECTOR},
    "usage": {"type": "object", "properties": {"tokens": {"type": "integer"}}}}}
OPENAI_KEYS = ("input", "model", "encoding_format", "dimensions", "user", CALLBACK_FIELD)
OPENAI_REQUEST = {"type": "object", "required": ["input"], "additionalProperties": False, "properties": {
    "input": TEXTS, "model": {"type": "string", "description": "Accepted and ignored: one model is served."},
    "encoding_format": ENCODING, "user": {"type": "string"}, CALLBACK_FIELD: CALLBACK_URL_SCHEMA,
    "dimensions": {"type": "integer", "minimum": 1, "description": "Must equal the model's dim if sent."}}}
OPENAI_RESPONSE = {"type": "object", "required": ["object", "data", "model", "usage"], "properties": {
    "object": {"const": "list"}, "model": {"type": "string"},
    "data": {"type": "array", "items": {"type": "object", "required": ["object", "index", "embedding"], "properties": {
        "object": {"const": "embedding"}, "index": {"type": "integer"}, "embedding": VECTOR}}},
    "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"], "properties": {
        "prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}}}}
ERRORS = (400, 413, 415, 500, 503, 504)


@bp.post("/embed")
@operation("Embed texts", request=json_content(EMBED_REQUEST), errors=ERRORS,
           responses={200: ("One embedding per text, in order.", json_content(EMBED_RESPONSE)), **JOB_ACCEPTED})
def embed():
    """Embed texts (L2-normalised vectors, in input order)."""
    service = current_service()
    body = read_json_object(("texts", "encoding_format", CALLBACK_FIELD), '{"texts": ["a sentence"]}')
    texts = service.check(body.get("texts"))
    encoding_format = choice(body, "encoding_format", ENCODING_FORMATS, "float")
    return answer(lambda: service.embed(texts, encoding_format), callback_url_from(body), respond=json_response)


@bp.post("/v1/embeddings")
@operation("Embed texts (OpenAI's embeddings API)", request=json_content(OPENAI_REQUEST), errors=ERRORS,
           responses={200: ("One embedding per input, in order.", json_content(OPENAI_RESPONSE)), **JOB_ACCEPTED},
           tags=["openai"])
def openai_embeddings():
    """OpenAI's POST /v1/embeddings; ``usage`` counts the model's tokens."""
    service = current_service()
    body = read_json_object(OPENAI_KEYS, '{"input": ["a sentence"], "model": "..."}')
    texts = service.check(body.get("input"))
    encoding_format = choice(body, "encoding_format", ENCODING_FORMATS, "float")
    dimensions = body.get("dimensions")
    check_dimensions(dimensions, service.runner.backend.dim)  # None while loading: checked again below

    def work() -> dict:
        result = service.embed(texts, encoding_format)
        check_dimensions(dimensions, result["dim"])
        tokens = result["usage"]["tokens"]
        return {"object": "list", "model": result["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "data": [{"object": "embedding", "index": n, "embedding": vector}
                         for n, vector in enumerate(result["embeddings"])]}

    return answer(work, callback_url_from(body), respond=json_response)


add_model_list(bp, None, lambda: (current_service().runner.backend.name, {}))
