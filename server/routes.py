"""HTTP routes of the CLIP server: /embed and /classify (/health comes from the core)."""

from __future__ import annotations

import json

import numpy as np
from flask import Blueprint, current_app, g, jsonify

from core.backend import ModelRunner
from core.errors import InvalidInput, PayloadTooLarge
from server.backends import IMAGE, TEXT
from server.inputs import check_count, check_texts, read_inputs
from server.label_cache import LabelCache
from server.settings import DEFAULT_PROMPT_TEMPLATE, ServerSettings

bp = Blueprint("clip", __name__)
CLASSIFY_OPTIONS = ("labels", "label", "template", "top_k")


def _runner() -> ModelRunner:
    return current_app.extensions["model_runner"]


def _settings() -> ServerSettings:
    return current_app.extensions["settings"]


def _vector(values: np.ndarray) -> list[float]:
    # 7 decimals keep unit vectors exact to ~1e-7 and make the JSON about half as long.
    return np.round(values.astype(np.float64), 7).tolist()


@bp.post("/embed")
def embed():
    """Embed images and/or texts into CLIP's shared space (L2-normalised)."""
    inputs = read_inputs()
    check_count(inputs, _settings().max_inputs)
    check_texts(inputs.texts)
    g.inputs = {"images": len(inputs.images), "texts": len(inputs.texts)}
    runner = _runner()
    out = runner.run_many({IMAGE: inputs.images, TEXT: inputs.texts}, g.batch_sizes)
    body = {"model": runner.backend.spec.label, "dim": runner.backend.dim}
    if inputs.images:
        body["image_embeddings"] = [_vector(v) for v in out[IMAGE]]
    if inputs.texts:
        body["text_embeddings"] = [_vector(v) for v in out[TEXT]]
    if len(inputs.images) + len(inputs.texts) == 1:
        body["embedding"] = (body.get("image_embeddings") or body["text_embeddings"])[0]
    return jsonify(body)


def _labels(inputs) -> list[str]:
    labels: list = []
    for value in inputs.options.get("labels", []) + inputs.options.get("label", []):
        if isinstance(value, str) and value.strip().startswith("["):  # -F 'labels=["cat","dog"]'
            try:
                value = json.loads(value)
            except ValueError:
                raise InvalidInput("labels is not a valid JSON list", code="invalid_labels") from None
        labels.extend(value if isinstance(value, list) else [value])
    if not labels:
        raise InvalidInput("send the candidate labels as repeated 'labels' fields or a JSON list",
                           code="no_labels")
    for n, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise InvalidInput(f"label {n} must be a non-empty string", code="invalid_labels")
    limit = _settings().max_labels
    if len(labels) > limit:
        raise PayloadTooLarge(f"{len(labels)} labels; the limit is {limit} (MAX_LABELS)", code="too_many_labels")
    return [label.strip() for label in labels]


def _top_k(inputs, n_labels: int) -> int:
    raw = inputs.option("top_k")
    if raw is None:
        return n_labels
    try:
        top_k = int(raw)
    except (TypeError, ValueError):
        raise InvalidInput("top_k must be a positive integer", code="invalid_option") from None
    if top_k < 1:
        raise InvalidInput("top_k must be a positive integer", code="invalid_option")
    return min(top_k, n_labels)


@bp.post("/classify")
def classify():
    """Zero-shot classification of images against candidate labels."""
    inputs = read_inputs(CLASSIFY_OPTIONS)
    if inputs.texts:
        raise InvalidInput("/classify takes images and labels; embed texts with /embed", code="invalid_field")
    check_count(inputs, _settings().max_inputs)
    labels = _labels(inputs)
    template = inputs.option("template") or DEFAULT_PROMPT_TEMPLATE
    if not isinstance(template, str) or "{}" not in template:
        raise InvalidInput("template must contain '{}' where the label goes, e.g. 'a photo of a {}'",
                           code="invalid_template")
    top_k = _top_k(inputs, len(labels))
    g.inputs = {"images": len(inputs.images), "labels": len(labels)}
    runner = _runner()
    cache: LabelCache = current_app.extensions["label_cache"]
    # str.replace, not str.format: a label with braces must not be able to break the template.
    prompts = [template.replace("{}", label) for label in labels]
    label_vectors = cache.get_many(prompts, lambda missing: runner.run(TEXT, missing, g.batch_sizes))
    image_vectors = np.stack(runner.run(IMAGE, inputs.images, g.batch_sizes))
    logits = runner.backend.logit_scale * image_vectors @ label_vectors.T
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    results = []
    for row in probabilities:
        order = np.argsort(-row, kind="stable")[:top_k]
        results.append({"labels": [{"label": labels[i], "score": round(float(row[i]), 6)} for i in order]})
    body = {"model": runner.backend.spec.label, "template": template, "results": results}
    if len(results) == 1:
        body["labels"] = results[0]["labels"]
    return jsonify(body)
