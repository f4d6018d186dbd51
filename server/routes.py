"""HTTP routes of the CLIP server: /embed and /classify (/health comes from the core).

Routes only read the request and render the answer; the work is ``server.service.ClipService``.
"""

from __future__ import annotations

import json

from flask import Blueprint, current_app, g, jsonify, request

from core.errors import InvalidInput
from server.encoding import json_response
from server.inputs import check_count, check_texts, read_inputs
from server.service import ClipService

bp = Blueprint("clip", __name__)
CLASSIFY_OPTIONS = ("labels", "label", "template", "top_k")
EMBED_OPTIONS = ("encoding_format",)


def _service() -> ClipService:
    return current_app.extensions["clip_service"]


@bp.post("/embed")
def embed():
    """Embed images and/or texts into CLIP's shared space (L2-normalised)."""
    service = _service()
    inputs = read_inputs(EMBED_OPTIONS)
    check_count(inputs, service.settings.max_inputs)
    check_texts(inputs.texts)
    g.inputs = {"images": len(inputs.images), "texts": len(inputs.texts)}
    encoding_format = inputs.option("encoding_format") or request.args.get("encoding_format")
    return json_response(service.embed(inputs.images, inputs.texts, g.batch_sizes, encoding_format=encoding_format))


def _labels(inputs) -> list:
    labels: list = []
    for value in inputs.options.get("labels", []) + inputs.options.get("label", []):
        if isinstance(value, str) and value.strip().startswith("["):  # -F 'labels=["cat","dog"]'
            try:
                value = json.loads(value)
            except ValueError:
                raise InvalidInput("labels is not a valid JSON list", code="invalid_labels") from None
        labels.extend(value if isinstance(value, list) else [value])
    return labels


@bp.post("/classify")
def classify():
    """Zero-shot classification of images against candidate labels."""
    service = _service()
    inputs = read_inputs(CLASSIFY_OPTIONS)
    if inputs.texts:
        raise InvalidInput("/classify takes images and labels; embed texts with /embed", code="invalid_field")
    check_count(inputs, service.settings.max_inputs)
    labels, template, top_k = service.classify_options(_labels(inputs), inputs.option("template"),
                                                       inputs.option("top_k"))
    g.inputs = {"images": len(inputs.images), "labels": len(labels)}
    return jsonify(service.classify(inputs.images, labels, template, top_k, g.batch_sizes))
