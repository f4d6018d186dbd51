"""GET /v1/models (OpenAI's models API), the same route for both services: the one model served."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from flask import Blueprint, current_app, jsonify

from core.web.openapi import MODEL_LIST_SCHEMA, json_content, operation


def add_model_list(bp: Blueprint, owned_by: str | None, model: Callable[[], tuple[str, dict]],
                   properties: Mapping[str, dict] | None = None) -> None:
    """Register GET /v1/models on ``bp``; ``model()`` gives the model's id and any extra fields,
    whose JSON Schemas are ``properties``; ``owned_by`` None: the service's name (its /health ``service``)."""
    started = int(time.time())  # "created": when this process started serving the model
    schema = MODEL_LIST_SCHEMA
    if properties:
        data = schema["properties"]["data"]
        item = {**data["items"], "properties": {**data["items"]["properties"], **properties}}
        schema = {**schema, "properties": {**schema["properties"], "data": {**data, "items": item}}}

    @bp.get("/v1/models")
    @operation("The model this service serves (OpenAI's models API)",
               responses={200: ("A list with the one loaded model.", json_content(schema))},
               tags=["openai"])
    def models():
        """OpenAI's GET /v1/models: the one model, named as responses name it."""
        model_id, extra = model()
        owner = owned_by or current_app.extensions["service_name"]
        return jsonify({"object": "list", "data": [{"id": model_id, "object": "model", "created": started,
                                                    "owned_by": owner, **extra}]})
