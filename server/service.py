"""What the CLIP server does, one method per operation: embed inputs, classify images.

Every entry point calls these and nothing else: the HTTP routes (/embed, /classify, /v1/embeddings),
callback_url jobs, /events/* and the batch job (server/job.py). None of them talks to the batcher
or the backend on its own, so validation, batching and the response shape live in one place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial

import numpy as np

from core import request_context
from core.errors import InvalidInput, NotReady, PayloadTooLarge, ServiceError
from core.model.admission import MemoryBudget
from core.model.runner import ModelRunner, PreprocessAll
from core.web.encoding import check_encoding_format, encode_vector
from server.backends import IMAGE, TEXT
from server.decode_pool import decode_all, pool_threads
from server.images import estimate_decoded_bytes
from server.label_cache import LabelCache
from server.settings import DEFAULT_PROMPT_TEMPLATE, ServerSettings

# A label or template longer than this is refused (400): CLIP reads 77 tokens, a few hundred
# characters at most, so more only costs tokenizer time and cache memory.
MAX_LABEL_CHARS = 1000
MAX_TEMPLATE_CHARS = 1000


class ClipService:
    """The CLIP server's operations on one runner (model + batcher) and one label cache."""

    def __init__(self, runner: ModelRunner, settings: ServerSettings, memory_budget: MemoryBudget | None = None):
        self.runner = runner
        self.settings = settings
        self.label_cache = LabelCache(settings.label_cache_size, int(settings.label_cache_mb * 1024 * 1024))
        self.memory_budget = memory_budget

    @contextlib.contextmanager
    def decoding(self, images: list[bytes]) -> Iterator[PreprocessAll]:
        """Reserve, from the headers alone, the decode memory of ``images`` (413/429 when it cannot);
        yields the function that decodes them, several at once where the budget has room.
        """
        preprocess = partial(self.runner.backend.preprocess, IMAGE)
        total = len(images)

        def decode_one(item: tuple[int, bytes]) -> np.ndarray:
            with _naming_the_image(item[0], total):
                return preprocess(item[1])

        if self.memory_budget is None or not images:
            parallel, held = min(len(images), pool_threads()), contextlib.nullcontext()
        else:
            spec = self.runner.backend.image_spec  # None while loading: no JPEG draft, a larger estimate
            # In input order: the first bad image's header gives the request its 4xx, as before.
            estimates = []
            for index, data in enumerate(images):
                with _naming_the_image(index, total):
                    estimates.append(estimate_decoded_bytes(data, spec, self.settings.max_image_pixels))
            parallel = self._parallel_decodes(estimates)
            # At most ``parallel`` images decode at any moment: the peak is the largest that many.
            peak = sum(sorted(estimates, reverse=True)[:parallel])
            held = self.memory_budget.reserve(peak, what="decoding these images")
        with held:
            yield lambda raws: decode_all(decode_one, list(enumerate(raws)), parallel)

    def _parallel_decodes(self, estimates: list[int]) -> int:
        """How many images to decode at once: up to the pool's size, while the budget's free room
        holds that many of the largest. One at a time reserves the largest image, as before: a
        multi-image request is never refused, nor kept waiting, for memory only parallel decoding needs.
        """
        most = min(len(estimates), pool_threads())
        free = self.memory_budget.limit_bytes - self.memory_budget.in_use  # a hint: reserve() decides
        largest_first = sorted(estimates, reverse=True)
        parallel = 1
        while parallel < most and sum(largest_first[:parallel + 1]) <= free:
            parallel += 1
        return parallel

    def embed(self, images: list[bytes], texts: list[str], encoding_format: str | None = None) -> dict:
        """Embed images and/or texts (already counted and checked) -> the /embed response body.

        ``encoding_format``: "float" (default, JSON numbers) or "base64" (little-endian float32).
        """
        encoding_format = check_encoding_format(encoding_format)
        with self.decoding(images) as decode:
            out = self.runner.run_many({IMAGE: images, TEXT: texts}, {IMAGE: decode})
        request_context.count(images=len(images), texts=len(texts))
        return self.embedding_body(out[IMAGE], out[TEXT], encoding_format)

    def image_vectors(self, images: list[bytes]) -> list[np.ndarray]:
        """Decode and embed images (counted in the request context): one pass through the model
        that ``embedding_body`` and ``scores`` can both read."""
        with self.decoding(images) as decode:
            vectors = self.runner.run(IMAGE, images, decode)
        request_context.count(images=len(images))
        return vectors

    def embedding_body(self, image_vectors: list[np.ndarray], text_vectors: list[np.ndarray],
                       encoding_format: str = "float") -> dict:
        """Vectors -> the /embed response body."""
        backend = self.runner.backend
        body = {"model": backend.spec.label, "dim": backend.dim}
        if image_vectors:
            body["image_embeddings"] = [encode_vector(v, encoding_format) for v in image_vectors]
        if text_vectors:
            body["text_embeddings"] = [encode_vector(v, encoding_format) for v in text_vectors]
        if len(image_vectors) + len(text_vectors) == 1:
            body["embedding"] = (body.get("image_embeddings") or body["text_embeddings"])[0]
        return body

    def check_images(self, images: list[bytes]) -> None:
        """Decode the images as a request would (raises its 4xx: bad image, or 413/429 from the
        memory budget); for callback_url jobs, before their 202."""
        with self.decoding(images) as decode:
            decode(images)

    def classify_options(self, labels: list, template, top_k) -> tuple[list[str], str, int]:
        """Validate /classify's options -> (labels, template, top_k); raises 4xx ServiceErrors."""
        if not labels:
            raise InvalidInput("send the candidate labels as repeated 'labels' fields or a JSON list",
                               code="no_labels")
        limit = self.settings.max_labels
        if len(labels) > limit:
            raise PayloadTooLarge(f"{len(labels)} labels; the limit is {limit} (MAX_LABELS)",
                                  code="too_many_labels")
        template = template or DEFAULT_PROMPT_TEMPLATE
        if not isinstance(template, str) or template.count("{}") != 1:
            raise InvalidInput("template must contain '{}' exactly once, where the label goes, e.g. "
                               "'a photo of a {}'", code="invalid_template")
        if len(template) > MAX_TEMPLATE_CHARS:
            raise InvalidInput(f"template has {len(template)} characters; the limit is {MAX_TEMPLATE_CHARS}",
                               code="template_too_long")
        for n, label in enumerate(labels):
            if not isinstance(label, str) or not label.strip():
                raise InvalidInput(f"label {n} must be a non-empty string", code="invalid_labels")
            if len(label) > MAX_LABEL_CHARS:
                raise InvalidInput(f"label {n} has {len(label)} characters; the limit is {MAX_LABEL_CHARS}",
                                   code="label_too_long")
        return [label.strip() for label in labels], template, _top_k(top_k, len(labels))

    def classify(self, images: list[bytes], labels: list[str], template: str, top_k: int) -> dict:
        """Zero-shot scores of each image against the labels -> the /classify response body."""
        # Labels first: while the model loads, the 503 comes before any image is decoded.
        label_vectors = self._label_vectors(labels, template)
        return self._scores(self.image_vectors(images), label_vectors, labels, template, top_k)

    def scores(self, image_vectors: list[np.ndarray], labels: list[str], template: str, top_k: int) -> dict:
        """``classify`` for images already embedded (``image_vectors``): the label half only."""
        return self._scores(image_vectors, self._label_vectors(labels, template), labels, template, top_k)

    def _label_vectors(self, labels: list[str], template: str) -> np.ndarray:
        runner = self.runner
        # str.replace, not str.format: a label with braces must not be able to break the template.
        prompts = [template.replace("{}", label) for label in labels]
        if runner.backend.context_length is None:  # no tokenizer before the model has loaded
            raise NotReady("not ready: the model is still loading", reason="loading", retry_after=5)
        label_vectors = self.label_cache.get_many(
            prompts, lambda missing: runner.run(TEXT, missing),
            key=lambda prompt: runner.backend.preprocess(TEXT, prompt).tobytes())
        return label_vectors

    def _scores(self, image_vectors: list[np.ndarray], label_vectors: np.ndarray, labels: list[str],
                template: str, top_k: int) -> dict:
        runner = self.runner
        request_context.count(labels=len(labels))
        logits = runner.backend.logit_scale * np.stack(image_vectors) @ label_vectors.T
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
        return body


def _top_k(raw, n_labels: int) -> int:
    if raw is None:
        return n_labels
    try:
        top_k = int(raw)
    except (TypeError, ValueError):
        raise InvalidInput("top_k must be a positive integer", code="invalid_option") from None
    if top_k < 1:
        raise InvalidInput("top_k must be a positive integer", code="invalid_option")
    return min(top_k, n_labels)


@contextlib.contextmanager
def _naming_the_image(index: int, total: int) -> Iterator[None]:
    """In a request with several images, a 4xx names the image: "image 3 of 5: the image file
    is truncated" (the index counts from 1, in the order the images were sent)."""
    try:
        yield
    except ServiceError as err:
        if total > 1:
            err.message = f"image {index + 1} of {total}: {err.message}"
        raise
