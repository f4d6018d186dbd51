"""OpenAI-compatible routes of the CLIP server: POST /v1/embeddings and GET /v1/models.

/v1/models also publishes the image preprocessing (``ImageSpec.published``), so that clients can
downscale large photos before upload.

The official ``openai`` SDKs work unchanged with ``base_url=<server>/v1``. Images travel in
``input`` as ``data:image/...;base64,`` URIs, or as base64 with ``modality: "image"`` (infinity's
convention). The work is ``server.service.ClipService.embed``, as for /embed.
"""

from __future__ import annotations

from flask import Blueprint

from core.deferred.async_jobs import CALLBACK_FIELD, JOB_ACCEPTED, answer, callback_url_from
from core.errors import InvalidInput
from core.web.encoding import ENCODING_FORMATS, check_dimensions, json_response
from core.web.json_body import choice, read_json_object
from core.web.model_list import add_model_list
from core.web.openapi import json_content, operation
from core.web.service_app import current_service
from server.inputs import Inputs, check_count, check_texts, decode_base64_image
from server.schemas import OPENAI_EMBEDDINGS_REQUEST, OPENAI_EMBEDDINGS_RESPONSE, PREPROCESSING_PROPERTY
from server.service import ClipService

bp = Blueprint("clip_openai", __name__)
MODALITIES = ("text", "image")
KNOWN_KEYS = ("input", "model", "encoding_format", "dimensions", "modality", "user", CALLBACK_FIELD)


def _body() -> dict:
    return read_json_object(KNOWN_KEYS, '{"input": ["a photo of a cat"], "model": "..."}')


def split_inputs(raw, modality: str | None) -> tuple[Inputs, list[str]]:
    """``input`` -> (images and texts, the kind of each input in order)."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("input must be a string or a non-empty list of strings", code="no_input")
    inputs, kinds = Inputs(), []
    for n, item in enumerate(raw):
        if not isinstance(item, str):
            raise InvalidInput(f"input[{n}] must be a string; token arrays are not supported (this service "
                               "tokenizes with the model's own tokenizer)", code="invalid_field")
        is_image = modality == "image" or (modality is None and item.lstrip()[:11].lower() == "data:image/")
        if is_image:
            inputs.images.append(decode_base64_image(item, f"input[{n}]"))
        else:
            inputs.texts.append(item)
        kinds.append("image" if is_image else "text")
    return inputs, kinds


@bp.post("/v1/embeddings")
@operation("Embed texts and images (OpenAI's embeddings API)",
           request=json_content(OPENAI_EMBEDDINGS_REQUEST),
           responses={200: ("One embedding per input, in input order.", json_content(OPENAI_EMBEDDINGS_RESPONSE)),
                      **JOB_ACCEPTED},
           errors=(400, 413, 415, 500, 503, 504), tags=["openai"])
def embeddings():
    """OpenAI's POST /v1/embeddings; ``usage`` counts one token per input (text or image)."""
    service: ClipService = current_service()
    body = _body()
    encoding_format = choice(body, "encoding_format", ENCODING_FORMATS, "float")
    modality = choice(body, "modality", MODALITIES, None)
    inputs, kinds = split_inputs(body.get("input"), modality)
    check_count(inputs, service.settings.max_inputs)
    check_texts(inputs.texts)
    dimensions = body.get("dimensions")
    check_dimensions(dimensions, service.runner.backend.dim)  # None while loading: checked again below

    def work() -> dict:
        result = service.embed(inputs.images, inputs.texts, encoding_format=encoding_format)
        check_dimensions(dimensions, result["dim"])
        vectors = {"image": iter(result.get("image_embeddings", [])), "text": iter(result.get("text_embeddings", []))}
        data = [{"object": "embedding", "index": n, "embedding": next(vectors[kind])} for n, kind in enumerate(kinds)]
        # No per-token billing here: each input (a text, truncated to the model's context, or an image)
        # counts as one, so usage says how many inputs were embedded.
        usage = {"prompt_tokens": len(kinds), "total_tokens": len(kinds)}
        return {"object": "list", "data": data, "model": result["model"], "usage": usage}

    return answer(work, callback_url_from(body), respond=json_response,
                  validate=lambda: service.check_images(inputs.images))


def _model() -> tuple[str, dict]:
    """The model's id and, once it is loaded, its image preprocessing (for clients that downscale)."""
    backend = current_service().runner.backend
    spec = backend.image_spec
    return backend.spec.label, ({"preprocessing": spec.published()} if spec else {})


add_model_list(bp, "clip-server", _model, PREPROCESSING_PROPERTY)
