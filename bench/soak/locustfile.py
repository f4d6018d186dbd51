"""Mixed CLIP traffic for the soak (`make soak`): small images, 12 MP photos, texts, classify.

Locust runs this file; the payloads come from the directory in ``SOAK_PAYLOADS`` (written by
``bench/soak/__main__.py`` before the run), so every user sends the same varied set.
"""

from __future__ import annotations

import os
import random
import string
from pathlib import Path

from locust import HttpUser, between, task

PAYLOADS = Path(os.environ["SOAK_PAYLOADS"])
SMALL = [path.read_bytes() for path in sorted(PAYLOADS.glob("small-*.jpg"))]
LARGE = [path.read_bytes() for path in sorted(PAYLOADS.glob("large-*.jpg"))]
WORDS = ["red", "blue", "green", "circle", "square", "triangle", "photo", "drawing", "cat", "dog", "street", "sky"]


def phrase() -> str:
    """A text that varies from request to request, with a word never seen before, as users' texts
    have (names, IDs, typos): label caches and tokenizers see new texts all the time."""
    rare = "".join(random.choices(string.ascii_lowercase, k=random.randint(5, 10)))
    return "a " + " ".join(random.choices(WORDS, k=random.randint(1, 6)) + [rare])


class ClipUser(HttpUser):
    """One client of the CLIP server: mostly small images and texts, now and then a phone photo."""

    wait_time = between(0.0, 0.05)

    @task(6)
    def small_image(self):
        self.client.post("/embed", files={"image": ("s.jpg", random.choice(SMALL))}, name="/embed small image")

    @task(1)
    def large_photo(self):
        self.client.post("/embed", files={"image": ("p.jpg", random.choice(LARGE))}, name="/embed 12 MP photo")

    @task(3)
    def texts(self):
        self.client.post("/embed", data=[("text", phrase()) for _ in range(random.randint(1, 4))],
                         name="/embed texts")

    @task(2)
    def classify(self):
        labels = [("labels", phrase()) for _ in range(random.randint(2, 6))]
        self.client.post("/classify", files={"image": ("s.jpg", random.choice(SMALL))}, data=labels,
                         name="/classify")

    @task(1)
    def json_embed(self):
        self.client.post("/v1/embeddings", json={"model": "clip", "input": [phrase(), phrase()]},
                         name="/v1/embeddings texts")
