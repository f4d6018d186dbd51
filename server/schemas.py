"""JSON Schemas of the CLIP server's requests and responses, for the routes' ``@operation``s."""

from __future__ import annotations

from core.deferred.async_jobs import CALLBACK_URL_SCHEMA

BINARY = {"type": "string", "format": "binary"}
VECTOR = {"anyOf": [{"type": "array", "items": {"type": "number"}},
                   {"type": "string", "description": "encoding_format=base64"}],
          "description": "L2-normalised embedding."}
STRINGS = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
ENCODING_FORMAT = {"enum": ["float", "base64"], "default": "float",
                   "description": "base64: each vector as base64 of little-endian float32 bytes."}
FILES = {"anyOf": [BINARY, {"type": "array", "items": BINARY}]}

EMBED_MULTIPART = {
    "type": "object",
    "properties": {"image": FILES, "images": FILES, "text": STRINGS, "texts": STRINGS,
                   "encoding_format": ENCODING_FORMAT, "callback_url": CALLBACK_URL_SCHEMA},
    "additionalProperties": False,
}
EMBED_JSON = {
    "type": "object",
    "properties": {"images": {**STRINGS, "description": "base64 or data:image/...;base64, URIs."},
                   "texts": STRINGS, "encoding_format": ENCODING_FORMAT, "callback_url": CALLBACK_URL_SCHEMA},
    "additionalProperties": False,
}
EMBED_RESPONSE = {
    "type": "object",
    "required": ["model", "dim"],
    "properties": {"model": {"type": "string"}, "dim": {"type": "integer"},
                   "image_embeddings": {"type": "array", "items": VECTOR},
                   "text_embeddings": {"type": "array", "items": VECTOR},
                   "embedding": VECTOR},
}
RAW_IMAGE = {"image/jpeg": BINARY, "image/png": BINARY, "application/octet-stream": BINARY}

CLASSIFY_MULTIPART = {
    "type": "object",
    "properties": {"image": FILES, "images": FILES, "labels": STRINGS, "label": STRINGS,
                   "template": {"type": "string"}, "top_k": {"type": "string"}, "callback_url": CALLBACK_URL_SCHEMA},
    "additionalProperties": False,
}
CLASSIFY_JSON = {
    "type": "object",
    "properties": {"images": STRINGS, "labels": STRINGS, "label": STRINGS, "template": {"type": "string"},
                   "top_k": {"type": "integer"}, "callback_url": CALLBACK_URL_SCHEMA},
    "additionalProperties": False,
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

OPENAI_EMBEDDINGS_REQUEST = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": {**STRINGS, "description": "Texts, and images as data:image/...;base64, URIs (or plain "
                                            "base64 with modality=image)."},
        "model": {"type": "string", "description": "Accepted and ignored: the service serves one model."},
        "encoding_format": {"enum": ["float", "base64"], "default": "float"},
        "dimensions": {"type": "integer", "description": "Must equal the model's dim if sent."},
        "modality": {"enum": ["text", "image"],
                     "description": "image: every input is an image; text: every input is text; absent: "
                                    "data:image/ URIs are images, the rest texts."},
        "user": {"type": "string"},
        "callback_url": CALLBACK_URL_SCHEMA,
    },
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
