"""GET /v1/models (OpenAI's models API), the same route for both services: the one model served."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Blueprint, jsonify

from core.web.openapi import MODEL_LIST_SCHEMA, json_content, operation


def add_model_list(bp: Blueprint, owned_by: str, model: Callable[[], tuple[str, dict]]) -> None:
    """Register GET /v1/models on ``bp``; ``model()`` gives the model's id and any extra fields."""
    started = int(time.time())  # "created": when this process started serving the model

    @bp.get("/v1/models")
    @operation("The model this service serves (OpenAI's models API)",
               responses={200: ("A list with the one loaded model.", json_content(MODEL_LIST_SCHEMA))},
               tags=["openai"])
    def models():
        """OpenAI's GET /v1/models: the one model, named as responses name it."""
        model_id, extra = model()
        return jsonify({"object": "list", "data": [{"id": model_id, "object": "model", "created": started,
                                                    "owned_by": owned_by, **extra}]})
