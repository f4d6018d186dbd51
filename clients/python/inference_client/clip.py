"""Client of the CLIP server: embed images and texts, zero-shot classify images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from inference_client.http import HttpClient, Media, read_media


@dataclass
class Embeddings:
    """One /embed answer: L2-normalised vectors in input order (dot product = cosine similarity)."""

    model: str
    dim: int
    images: list[list[float]]
    texts: list[list[float]]


class Label(NamedTuple):
    """One label with its softmax probability."""

    label: str
    score: float


class ClipClient:
    """The CLIP server at ``url`` (default: ``$CLIP_SERVER_URL``), key ``$CLIP_SERVER_API_KEY``.

    Keyword arguments (timeout, connect_timeout, max_retries, max_retry_wait_s) go to ``HttpClient``.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0, **options):
        self.http = HttpClient.from_env(url, api_key, "CLIP_SERVER_URL", "CLIP_SERVER_API_KEY",
                                        "the CLIP server's URL (http://localhost:5001 locally, the Cloud Run "
                                        "URL in production)", timeout=timeout, **options)

    def embed(self, images: Sequence[Media] = (), texts: Sequence[str] = ()) -> Embeddings:
        """Embed images (paths, bytes or binary files) and texts in one request."""
        files = [("image", read_media(image, f"image{n}")) for n, image in enumerate(images)]
        data = [("text", text) for text in texts]
        body = self.http.request("POST", "/embed", files=files or None, data=data or None).json()
        return Embeddings(body["model"], body["dim"], body.get("image_embeddings", []),
                          body.get("text_embeddings", []))

    def embed_image(self, image: Media) -> list[float]:
        """One image's vector."""
        return self.embed(images=[image]).images[0]

    def embed_text(self, text: str) -> list[float]:
        """One text's vector."""
        return self.embed(texts=[text]).texts[0]

    def classify(self, images: Sequence[Media], labels: Sequence[str], *, template: str | None = None,
                 top_k: int | None = None) -> list[list[Label]]:
        """Per image, the labels by probability, highest first (``template`` default: 'a photo of a {}')."""
        files = [("image", read_media(image, f"image{n}")) for n, image in enumerate(images)]
        data = [("labels", label) for label in labels]
        if template is not None:
            data.append(("template", template))
        if top_k is not None:
            data.append(("top_k", str(top_k)))
        body = self.http.request("POST", "/classify", files=files, data=data).json()
        return [[Label(item["label"], item["score"]) for item in result["labels"]] for result in body["results"]]

    def classify_image(self, image: Media, labels: Sequence[str], **options) -> list[Label]:
        """One image's labels by probability, highest first."""
        return self.classify([image], labels, **options)[0]

    def health(self) -> dict:
        """The server's /health body (raises Unavailable while it is not ready)."""
        return self.http.health()
