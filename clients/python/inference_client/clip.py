"""Client of the CLIP server: embed images and texts, zero-shot classify images."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from inference_client import images as image_prep
from inference_client.errors import NotFound
from inference_client.http import HttpClient, Media, read_media

# A server that answered without preprocessing (still loading, or an older version) is asked again
# after this long; one that has no /v1/models at all (404) is never asked again.
PREPROCESSING_RETRY_S = 30.0


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

    Images larger than the model needs are downscaled before upload, as the server would after it
    (``inference_client.images``; needs Pillow): a 12 MP photo goes as ~50 KB instead of ~5 MB and
    costs the server a few ms of CPU instead of ~60. ``resize=False`` (here or per call) sends the
    original bytes. Keyword arguments (timeout, connect_timeout, max_retries, max_retry_wait_s) go
    to ``HttpClient``.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 resize: bool = True, **options):
        self.http = HttpClient.from_env(url, api_key, "CLIP_SERVER_URL", "CLIP_SERVER_API_KEY",
                                        "the CLIP server's URL (http://localhost:5001 locally, the Cloud Run "
                                        "URL in production)", timeout=timeout, **options)
        self.resize = resize
        self._preprocessing: dict | None = None
        self._preprocessing_checked = -float("inf")  # monotonic time of the last look; inf: never again
        self._lock = threading.Lock()

    def preprocessing(self) -> dict | None:
        """The server's published image preprocessing (GET /v1/models), read once and cached; None if unknown."""
        with self._lock:
            if self._preprocessing is not None or \
                    time.monotonic() - self._preprocessing_checked < PREPROCESSING_RETRY_S:
                return self._preprocessing
            try:
                self._preprocessing = image_prep.preprocessing_of(self.http.request("GET", "/v1/models").json())
                self._preprocessing_checked = time.monotonic()
            except NotFound:
                self._preprocessing_checked = float("inf")  # a server without the route: originals, always
            except ValueError:
                self._preprocessing_checked = time.monotonic()  # not JSON: ask again later
            return self._preprocessing

    def prepare(self, image: Media, default_name: str, resize: bool | None = None) -> tuple[str, bytes]:
        """(file name, bytes to upload) of one image: downscaled when larger than the model needs."""
        name, data = read_media(image, default_name)
        if not (self.resize if resize is None else resize) or not image_prep.available():
            return name, data
        return image_prep.prepare(name, data, self.preprocessing())

    def _image_files(self, images: Sequence[Media], resize: bool | None) -> list[tuple[str, tuple[str, bytes]]]:
        return [("image", self.prepare(image, f"image{n}", resize)) for n, image in enumerate(images)]

    def embed(self, images: Sequence[Media] = (), texts: Sequence[str] = (), *,
              resize: bool | None = None) -> Embeddings:
        """Embed images (paths, bytes or binary files) and texts in one request."""
        files = self._image_files(images, resize)
        data = [("text", text) for text in texts]
        body = self.http.request("POST", "/embed", files=files or None, data=data or None).json()
        return Embeddings(body["model"], body["dim"], body.get("image_embeddings", []),
                          body.get("text_embeddings", []))

    def embed_image(self, image: Media, *, resize: bool | None = None) -> list[float]:
        """One image's vector."""
        return self.embed(images=[image], resize=resize).images[0]

    def embed_text(self, text: str) -> list[float]:
        """One text's vector."""
        return self.embed(texts=[text]).texts[0]

    def classify(self, images: Sequence[Media], labels: Sequence[str], *, template: str | None = None,
                 top_k: int | None = None, resize: bool | None = None) -> list[list[Label]]:
        """Per image, the labels by probability, highest first (``template`` default: 'a photo of a {}')."""
        files = self._image_files(images, resize)
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
