"""JSON Schemas of the CLIP server's requests and responses, for the routes' ``@operation``s.

Every rule the routes and service enforce is here too (a schemathesis run in the tests checks both
ways: what the schema allows is accepted, what it forbids is refused): non-blank texts and labels,
one to MAX_INPUTS inputs, MAX_LABELS labels, a template with one ``{}``, image media types.
What no schema can say: the sum of images and texts over MAX_INPUTS (each field alone is bounded)
and the model's dimension before it has loaded.
"""

from __future__ import annotations

from core.deferred.async_jobs import CALLBACK_URL_SCHEMA
from core.web.openapi import FromApp, callback_field, setting_value
from server.images import SUPPORTED_FORMATS
from server.service import MAX_LABEL_CHARS, MAX_TEMPLATE_CHARS

BINARY = {"type": "string", "format": "binary"}
# The media types of SUPPORTED_FORMATS, for multipart parts (``encoding``) and raw bodies.
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff")
IMAGE_PARTS = {"contentType": ", ".join(IMAGE_MEDIA_TYPES)}
TEXT = {"type": "string", "pattern": r"\S", "description": "Text with something besides whitespace."}
BASE64_IMAGE = {"type": "string", "format": "byte", "contentEncoding": "base64", "contentMediaType": "image/*",
                "description": f"An image file ({SUPPORTED_FORMATS}) as base64, or a data:image/...;base64, URI."}
# A label, as the service reads it: some non-blank text, not starting with '[' (a JSON list of labels
# in one field, -F 'labels=["cat","dog"]', which the description mentions).
LABEL = {"type": "string", "pattern": r"^\s*[^\s\[]", "maxLength": MAX_LABEL_CHARS}
# '{}' exactly once: no '{}' before it and none after (a '{' may end either side, a '}' start it).
_NO_PLACEHOLDER = r"(?:[^{]|\{+[^{}])*\{*"
TEMPLATE = {"type": ["string", "null"], "maxLength": MAX_TEMPLATE_CHARS,
            "pattern": rf"^(?:|{_NO_PLACEHOLDER}\{{\}}{_NO_PLACEHOLDER})$",
            "description": "Where the label goes: '{}' exactly once (default 'a photo of a {}'; empty or null: "
                           "the default)."}
TOP_K_FIELD = {"type": "string", "pattern": "^[0-9]*[1-9][0-9]*$", "description": "A positive integer."}
TOP_K = {"anyOf": [{"type": "integer", "minimum": 1}, TOP_K_FIELD, {"type": "null"}],
         "description": "Labels per image, best first (default, or null: all)."}
ENCODING_FORMAT = {"enum": ["float", "base64"], "default": "float",
                   "description": "base64: each vector as base64 of little-endian float32 bytes."}
ENCODING_FORMAT_JSON = {**ENCODING_FORMAT, "enum": ["float", "base64", None]}  # null: the default
CALLBACK_URL = callback_field(CALLBACK_URL_SCHEMA)  # 400 callbacks_disabled without CALLBACK_SECRET
CALLBACK_URL_JSON = callback_field(CALLBACK_URL_SCHEMA, nullable=True)
NOT_EMPTY = {"not": {"type": "array", "maxItems": 0}}


def many(item: dict, limit: str, at_least: int = 0) -> dict:
    """One string ``item`` or a list of them, at most the setting ``limit`` (a field may be empty when
    another field carries the inputs: ``some_of`` says at least one is not).

    One schema for both shapes (string keywords apply to the string, array ones to the list): a
    multipart generator then sees ``format: binary`` on the field itself and sends files.
    """
    return {**item, "type": ["string", "array"], "items": item, "minItems": at_least,
            "maxItems": setting_value(limit)}


def some_of(*fields: str) -> dict:
    """At least one of ``fields`` present and not an empty list."""
    return {"anyOf": [{"required": [name], "properties": {name: NOT_EMPTY}} for name in fields]}


FILES = many(BINARY, "max_inputs")
TEXTS = many(TEXT, "max_inputs")
LABELS = many(LABEL, "max_labels")

EMBED_MULTIPART = {
    "type": "object",
    "properties": {"image": FILES, "images": FILES, "text": TEXTS, "texts": TEXTS,
                   "encoding_format": ENCODING_FORMAT, "callback_url": CALLBACK_URL},
    "additionalProperties": False,
    **some_of("image", "images", "text", "texts"),
}
EMBED_JSON = {
    "type": "object",
    "properties": {"images": many(BASE64_IMAGE, "max_inputs"), "texts": TEXTS,
                   "encoding_format": ENCODING_FORMAT_JSON, "callback_url": CALLBACK_URL_JSON},
    "additionalProperties": False,
    **some_of("images", "texts"),
}
FILE_PARTS = {"image": IMAGE_PARTS, "images": IMAGE_PARTS}
VECTOR = {"anyOf": [{"type": "array", "items": {"type": "number"}},
                   {"type": "string", "description": "encoding_format=base64"}],
          "description": "L2-normalised embedding."}
EMBED_RESPONSE = {
    "type": "object",
    "required": ["model", "dim"],
    "properties": {"model": {"type": "string"}, "dim": {"type": "integer"},
                   "image_embeddings": {"type": "array", "items": VECTOR},
                   "text_embeddings": {"type": "array", "items": VECTOR},
                   "embedding": VECTOR},
}
RAW_IMAGE = {media: BINARY for media in IMAGE_MEDIA_TYPES}  # (and application/octet-stream: curl's default)

CLASSIFY_MULTIPART = {
    "type": "object",
    "properties": {"image": FILES, "images": FILES, "labels": LABELS, "label": LABELS,
                   "template": {**TEMPLATE, "type": "string"}, "top_k": TOP_K_FIELD, "callback_url": CALLBACK_URL},
    "additionalProperties": False,
    "allOf": [some_of("image", "images"), some_of("labels", "label")],
}
CLASSIFY_JSON = {
    "type": "object",
    "required": ["images"],
    "properties": {"images": many(BASE64_IMAGE, "max_inputs", at_least=1), "labels": LABELS, "label": LABELS,
                   "template": TEMPLATE, "top_k": TOP_K, "callback_url": CALLBACK_URL_JSON},
    "additionalProperties": False,
    **some_of("labels", "label"),
}
SCORES = {"type": "array", "items": {"type": "object", "required": ["label", "score"],
                                     "properties": {"label": {"type": "string"}, "score": {"type": "number"}}}}
CLASSIFY_RESPONSE = {
    "type": "object",
    "required": ["model", "template", "results"],
    "properties": {"model": {"type": "string"}, "template": {"type": "string"},
                   "results": {"type": "array", "items": {"type": "object", "required": ["labels"],
                                                          "properties": {"labels": SCORES}}},
                   "labels": SCORES},
}


def _model_dim(app) -> dict:
    """``dimensions``: the loaded model's dimension, or any integer while it loads (checked then)."""
    dim = app.extensions["model_runner"].backend.dim
    described = {"description": "Must equal the model's dimension if sent (null: not sent)."}
    return {"enum": [dim, None], **described} if dim else {"type": ["integer", "null"], **described}


OPENAI_EMBEDDINGS_REQUEST = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": {"description": "Texts, and images as data:image/...;base64, URIs (or plain base64 with "
                                 "modality=image): one, or a list of 1 to MAX_INPUTS."},
        "model": {"description": "Accepted and ignored: the service serves one model."},
        "encoding_format": {"enum": ["float", "base64", None], "default": "float"},
        "dimensions": FromApp(_model_dim),
        "modality": {"enum": ["text", "image", None],
                     "description": "image: every input is an image; text: every input is text; absent or "
                                    "null: data:image/ URIs are images, the rest texts."},
        "user": {"description": "Accepted and ignored."},
        "callback_url": callback_field(CALLBACK_URL_SCHEMA, nullable=True, lists=True),
    },
    "additionalProperties": False,
    "anyOf": [
        {"required": ["modality"], "properties": {"modality": {"const": "image"},
                                                  "input": many(BASE64_IMAGE, "max_inputs", at_least=1)}},
        {"properties": {"modality": {"enum": ["text", None]}, "input": many(TEXT, "max_inputs", at_least=1)}},
    ],
}
OPENAI_EMBEDDINGS_RESPONSE = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {
            "type": "object", "required": ["object", "index", "embedding"],
            "properties": {"object": {"const": "embedding"}, "index": {"type": "integer"},
                           "embedding": {"anyOf": [VECTOR, {"type": "string",
                                                            "description": "base64 little-endian float32"}]}}}},
        "model": {"type": "string"},
        "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"],
                  "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}},
    },
}

# The CLIP server's image preprocessing (server.images.ImageSpec.published), in /v1/models and /health.
PREPROCESSING_SCHEMA = {
    "type": "object",
    "description": "What the server does to every image. A client may do the same before upload: an image larger "
                   "than max_useful_size, downscaled to it with the same filter, gives the same embedding.",
    "required": ["input_size", "resize", "resize_size", "filter", "crop", "max_useful_size"],
    "properties": {
        "input_size": {"type": "integer", "description": "the model sees input_size x input_size pixels"},
        "resize": {"enum": ["shortest_side", "squash"],
                   "description": "shortest_side: the shortest side is resized to resize_size, aspect kept; "
                                  "squash: both sides to resize_size"},
        "resize_size": {"type": "integer"},
        "filter": {"enum": ["bicubic", "bilinear", "nearest", "lanczos"]},
        "crop": {"enum": ["center", "none"], "description": "center: then a centre crop of input_size"},
        "max_useful_size": {"type": "object", "description": "{short_side} (shortest_side) or {width, height} "
                            "(squash): larger uploads lose nothing when downscaled to it before upload",
                            "properties": {"short_side": {"type": "integer"}, "width": {"type": "integer"},
                                           "height": {"type": "integer"}}},
    },
}
# /health and /v1/models publish it once the model is loaded (clients downscale photos by it).
PREPROCESSING_PROPERTY = {"preprocessing": {**PREPROCESSING_SCHEMA, "description": "Once the model is loaded. "
                                            + PREPROCESSING_SCHEMA["description"]}}
