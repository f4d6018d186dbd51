"""The CLIP server's event handler: one image object -> ``<key>@<generation>.json`` with its embedding.

Options an event may carry: ``labels`` (then zero-shot scores are added, as /classify returns them),
``template`` and ``top_k``. The work goes through ``ClipService`` like every other entry point.
"""

from __future__ import annotations

import json

from core.errors import InvalidInput
from server.service import ClipService

OPTIONS = ("labels", "template", "top_k")


def image_handler(service: ClipService):
    """The EventHandler for ``core.from_storage.event_routes.install_events``: image bytes + options -> result files."""

    def run(data: bytes, options: dict, meta: dict) -> dict[str, tuple[bytes, str]]:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise InvalidInput(f"unknown option '{unknown[0]}'; an image job takes {', '.join(OPTIONS)}",
                               code="unknown_field")
        labels = options.get("labels")
        checked = None
        if labels is not None:  # validate before spending the model on the embedding
            labels = labels if isinstance(labels, list) else [labels]
            checked = service.classify_options(labels, options.get("template"), options.get("top_k"))
        # One decode and one forward for the image: the embedding and the scores share its vector.
        vectors = service.image_vectors([data])
        body = service.embedding_body(vectors, [])
        result = {**meta, "model": body["model"], "dim": body["dim"], "embedding": body["embedding"]}
        if checked:
            classified = service.scores(vectors, *checked)
            result.update(template=classified["template"], labels=classified["labels"])
        return {"json": (json.dumps(result).encode(), "application/json")}

    return run
