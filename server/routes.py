"""HTTP routes of the CLIP server: /embed and /classify (/health comes from the core).

Routes only read the request and render the answer; the work is ``server.service.ClipService``.
"""

from __future__ import annotations

from flask import Blueprint, request

from core.deferred.async_jobs import CALLBACK_FIELD, JOB_ACCEPTED, answer, callback_url_from
from core.errors import InvalidInput
from core.web.encoding import check_encoding_format, json_response
from core.web.json_body import app_bounds, loads_bounded
from core.web.openapi import json_content, operation
from core.web.service_app import current_service
from server import schemas
from server.inputs import check_count, check_texts, read_inputs
from server.service import ClipService

bp = Blueprint("clip", __name__)
CLASSIFY_OPTIONS = ("labels", "label", "template", "top_k", CALLBACK_FIELD)
EMBED_OPTIONS = ("encoding_format", CALLBACK_FIELD)


@bp.post("/embed")
@operation("Embed images and/or texts", request={"multipart/form-data": schemas.EMBED_MULTIPART,
                                                 "application/json": schemas.EMBED_JSON, **schemas.RAW_IMAGE},
           responses={200: ("Embeddings by kind, in input order.", json_content(schemas.EMBED_RESPONSE)),
                      **JOB_ACCEPTED},
           errors=(400, 413, 415, 500, 503, 504))
def embed():
    """Embed images and/or texts into CLIP's shared space (L2-normalised)."""
    service: ClipService = current_service()
    inputs = read_inputs(EMBED_OPTIONS)
    check_count(inputs, service.settings.max_inputs)
    check_texts(inputs.texts)
    encoding_format = check_encoding_format(inputs.option("encoding_format") or request.args.get("encoding_format"))
    return answer(lambda: service.embed(inputs.images, inputs.texts, encoding_format=encoding_format),
                  callback_url_from(inputs.options), respond=json_response,
                  validate=lambda: service.check_images(inputs.images))


def _labels(inputs) -> list:
    labels: list = []
    for value in inputs.options.get("labels", []) + inputs.options.get("label", []):
        if isinstance(value, str) and value.strip().startswith("["):  # -F 'labels=["cat","dog"]'
            value = loads_bounded(value, app_bounds(), malformed=("invalid_labels", "labels is not a valid JSON list"))
        labels.extend(value if isinstance(value, list) else [value])
    return labels


@bp.post("/classify")
@operation("Zero-shot classification of images", request={"multipart/form-data": schemas.CLASSIFY_MULTIPART,
                                                         "application/json": schemas.CLASSIFY_JSON},
           responses={200: ("Labels by probability, per image.", json_content(schemas.CLASSIFY_RESPONSE)),
                      **JOB_ACCEPTED},
           errors=(400, 413, 415, 500, 503, 504))
def classify():
    """Zero-shot classification of images against candidate labels."""
    service: ClipService = current_service()
    inputs = read_inputs(CLASSIFY_OPTIONS)
    if inputs.texts:
        raise InvalidInput("/classify takes images and labels; embed texts with /embed", code="invalid_field")
    check_count(inputs, service.settings.max_inputs)
    labels, template, top_k = service.classify_options(_labels(inputs), inputs.option("template"),
                                                       inputs.option("top_k"))
    return answer(lambda: service.classify(inputs.images, labels, template, top_k),
                  callback_url_from(inputs.options), validate=lambda: service.check_images(inputs.images))
