"""The CLIP HTTP API in-process with the fake backend: shapes, order, inputs, classify, errors."""

from __future__ import annotations

import base64
import io
import threading

import numpy as np
import pytest
from PIL import Image

from server.app import create_app
from server.backends.fake import FakeClipBackend
from server.models import resolve_spec
from server.settings import ServerSettings
from tests.conftest import wait_until
from tests.media import encode

pytestmark = pytest.mark.unit


def make_client(backend_cls=FakeClipBackend, **overrides):
    settings = ServerSettings.from_env({}, clip_model="fake", log_level="WARNING", **overrides)
    app = create_app(settings, backend=backend_cls(settings, resolve_spec(settings)))
    client = app.test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 10)
    return app, client


@pytest.fixture(scope="module")
def client():
    return make_client()[1]


RED = encode(Image.new("RGB", (80, 60), (220, 20, 20)))
BLUE = encode(Image.new("RGB", (80, 60), (20, 20, 220)), "PNG")


def upload(*images, **fields):
    data = {key: value for key, value in fields.items()}
    data["image"] = [(io.BytesIO(img), f"img{n}.jpg") for n, img in enumerate(images)]
    return data


def test_single_image_answers_embedding_as_curl_users_expect(client):
    body = client.post("/embed", data=upload(RED)).get_json()
    assert set(body) == {"model", "dim", "image_embeddings", "embedding"}
    vector = np.asarray(body["embedding"])
    assert vector.shape == (body["dim"],)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    assert body["embedding"] == body["image_embeddings"][0]


def test_images_and_texts_keep_their_order(client):
    texts = ["zero", "one", "two", "three"]
    body = client.post("/embed", data=upload(RED, BLUE, text=texts)).get_json()
    assert "embedding" not in body
    assert len(body["image_embeddings"]) == 2 and len(body["text_embeddings"]) == 4
    for n, text in enumerate(texts):
        alone = client.post("/embed", data={"text": text}).get_json()["embedding"]
        assert alone == body["text_embeddings"][n]
    red_alone = client.post("/embed", data=upload(RED)).get_json()["embedding"]
    assert red_alone == body["image_embeddings"][0] != body["image_embeddings"][1]


def test_json_base64_data_uri_and_raw_body_give_the_same_vector(client):
    reference = client.post("/embed", data=upload(RED)).get_json()["embedding"]
    b64 = base64.b64encode(RED).decode()
    as_json = client.post("/embed", json={"images": [b64]}).get_json()["embedding"]
    as_uri = client.post("/embed", json={"images": ["data:image/jpeg;base64," + b64]}).get_json()["embedding"]
    urlsafe = client.post("/embed", json={"image": base64.urlsafe_b64encode(RED).decode().rstrip("=")})
    raw = client.post("/embed", data=RED, content_type="image/jpeg").get_json()["embedding"]
    assert as_json == as_uri == raw == urlsafe.get_json()["embedding"] == reference


def test_json_texts(client):
    body = client.post("/embed", json={"texts": ["a", "b"]}).get_json()
    assert len(body["text_embeddings"]) == 2 and "image_embeddings" not in body


def test_classify_returns_sorted_probabilities_per_image(client):
    labels = ["cat", "dog", "car", "tree"]
    body = client.post("/classify", data=upload(RED, BLUE, labels=labels)).get_json()
    assert len(body["results"]) == 2 and "labels" not in body
    for result in body["results"]:
        scores = [entry["score"] for entry in result["labels"]]
        assert scores == sorted(scores, reverse=True)
        assert abs(sum(scores) - 1) < 1e-4
        assert sorted(entry["label"] for entry in result["labels"]) == sorted(labels)


def test_classify_options_template_top_k_and_json_list(client):
    body = client.post("/classify", data=upload(RED, labels='["cat", "dog", "car"]', top_k="2",
                                                  template="a drawing of a {}")).get_json()
    assert body["template"] == "a drawing of a {}" and len(body["labels"]) == 2
    as_json = client.post("/classify", json={"images": [base64.b64encode(RED).decode()],
                                             "labels": ["cat", "dog", "car"], "top_k": 2,
                                             "template": "a drawing of a {}"}).get_json()
    assert as_json["labels"] == body["labels"]


def test_classify_caches_label_embeddings():
    app, client = make_client()
    cache = app.extensions["service"].label_cache
    client.post("/classify", data=upload(RED, labels=["cat", "dog"]))
    assert (cache.hits, cache.misses) == (0, 2)
    client.post("/classify", data=upload(BLUE, labels=["dog", "cat", "owl"]))
    assert (cache.hits, cache.misses) == (2, 3)


@pytest.mark.parametrize("request_kwargs, status, code", [
    (dict(data=upload(RED)), 400, "no_labels"),
    (dict(data=upload(RED, labels=["cat", " "])), 400, "invalid_labels"),
    (dict(data=upload(RED, labels=["cat"], template="no placeholder")), 400, "invalid_template"),
    (dict(data=upload(RED, labels=["cat"], top_k="zero")), 400, "invalid_option"),
    (dict(data={"labels": ["cat"]}), 400, "no_input"),
    (dict(data=upload(RED, labels=["cat"], text="hello")), 400, "invalid_field"),
    (dict(data=upload(RED, labels='["cat", 3'), ), 400, "invalid_labels"),
])
def test_classify_bad_input(client, request_kwargs, status, code):
    response = client.post("/classify", **request_kwargs)
    assert (response.status_code, response.get_json()["error"]["code"]) == (status, code)


def test_too_many_labels_is_413():
    _, client = make_client(max_labels=3)
    response = client.post("/classify", data=upload(RED, labels=["a", "b", "c", "d"]))
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "too_many_labels"


class FailingBackend(FakeClipBackend):
    """Fails any batch that contains the text 'explode', like a model that chokes on one input."""

    def forward(self, kind, batch):
        if kind == "text" and any(bytes(item[item > 0].astype(np.uint8)) == b"explode" for item in batch):
            raise RuntimeError("CUDA error: device-side assert triggered")
        return super().forward(kind, batch)


def test_a_failing_batch_is_a_500_for_its_requests_only_and_the_service_keeps_serving():
    app, client = make_client(FailingBackend, max_wait_ms=200, max_batch_size=16)
    results = {}

    def call(name, text):
        results[name] = client.post("/embed", data={"text": text})

    bad = threading.Thread(target=call, args=("bad", "explode"))
    bad.start()
    results["image"] = client.post("/embed", data=upload(RED))  # image batches are separate
    bad.join()
    assert results["bad"].status_code == 500
    assert results["bad"].get_json()["error"]["code"] == "inference_failed"
    assert results["image"].status_code == 200
    assert client.post("/embed", data={"text": "fine"}).status_code == 200
    assert client.get("/health").status_code == 200


class HeldBackend(FakeClipBackend):
    """Holds every batch until released, so the queue behind it fills up."""

    release = threading.Event()
    release.set()  # let the warm-up batch through

    def forward(self, kind, batch):
        self.release.wait(30)
        return super().forward(kind, batch)


def test_overload_is_429_with_retry_after_and_the_queue_drains_afterwards():
    app, client = make_client(HeldBackend, max_queue=4, max_batch_size=1, max_wait_ms=0, max_labels=4, max_inputs=4)
    HeldBackend.release.clear()
    runner = app.extensions["model_runner"]
    waiting = [threading.Thread(target=client.post, args=("/embed",), kwargs={"data": {"text": f"t{n}"}})
               for n in range(5)]  # one in the model, four filling the queue
    for thread in waiting:
        thread.start()
    wait_until(lambda: runner.batcher.queue_depth() == 4, 10)
    response = client.post("/embed", data={"text": "one too many"})
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "overloaded"
    assert int(response.headers["Retry-After"]) >= 1
    HeldBackend.release.set()
    for thread in waiting:
        thread.join(30)
    assert client.post("/embed", data={"text": "after"}).status_code == 200


def test_a_request_bigger_than_the_whole_queue_is_413_not_429():
    _, client = make_client(max_queue=2, max_labels=2, max_inputs=2)  # larger ones are refused at start-up
    response = client.post("/embed", data={"text": ["a", "b", "c"]})
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "too_many_inputs"


def test_health_reports_model_and_batching(client):
    body = client.get("/health").get_json()
    assert body["status"] == "ok" and body["model"] == "fake" and body["dim"] == 64
    assert body["device"] == "cpu" and body["batching"]["max_batch_size"] == 8
