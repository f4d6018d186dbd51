"""The CLIP server for real: `python -m server` (gunicorn) on loopback with the embedded demo model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from server.demo.shapes import caption, draw_shape
from tests.conftest import run_service
from tests.media import encode

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def service(clip_service):
    return clip_service


def shape_jpeg(color: str, shape: str, seed: int, size=(160, 120)) -> bytes:
    return encode(draw_shape(color, shape, np.random.default_rng(seed), size=size), "JPEG", quality=92)


def embed(service, **kwargs) -> dict:
    response = requests.post(service.url + "/embed", timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def test_health_says_ready_with_model_details(service):
    body = requests.get(service.url + "/health", timeout=5).json()
    assert body["status"] == "ok" and body["model"] == "ShapesCLIP-Tiny" and body["device"] == "cpu"
    assert body["dim"] > 0 and body["batching"]["max_batch_size"] >= 1
    assert body["stats"]["batches"] == 0 or body["stats"]["failed_batches"] == 0


def test_readme_curl_example_works_as_printed(service, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(shape_jpeg("red", "circle", 1))
    out = subprocess.run(["curl", "-sS", "-X", "POST", f"{service.url}/embed", "-F", f"image=@{photo}"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    body = json.loads(out)
    assert len(body["embedding"]) == body["dim"]


def test_a_red_circle_is_nearest_its_own_caption(service):
    captions = [caption(c, s) for c in ("red", "blue", "green") for s in ("circle", "square", "triangle")]
    texts = embed(service, data={"text": captions})["text_embeddings"]
    for color, shape in [("red", "circle"), ("blue", "square"), ("green", "triangle")]:
        image = np.asarray(embed(service, files={"image": ("x.jpg", shape_jpeg(color, shape, 7))})["embedding"])
        scores = np.asarray(texts) @ image
        assert captions[int(np.argmax(scores))] == caption(color, shape)


def test_classify_picks_the_right_shape(service):
    labels = [f"{c} {s}" for c in ("red", "blue", "green", "yellow") for s in ("circle", "square", "triangle")]
    response = requests.post(service.url + "/classify", timeout=30,
                             files={"image": ("x.jpg", shape_jpeg("yellow", "square", 3))},
                             data={"labels": labels})
    assert response.status_code == 200, response.text
    assert response.json()["labels"][0]["label"] == "yellow square"


def test_32_concurrent_clients_get_their_own_answers_and_share_batches(service):
    jobs = [(c, s, n) for n, (c, s) in enumerate([(c, s) for c in ("red", "blue", "green", "purple")
                                                  for s in ("circle", "square", "triangle", "star")] * 2)]
    images = {job: shape_jpeg(*job) for job in jobs}
    sequential = {job: embed(service, files={"image": ("x.jpg", data)})["embedding"] for job, data in images.items()}
    before = requests.get(service.url + "/health", timeout=5).json()["stats"]

    def one(job):
        return job, embed(service, files={"image": ("x.jpg", images[job])})["embedding"]

    with ThreadPoolExecutor(32) as pool:
        concurrent = dict(pool.map(one, jobs))
    after = requests.get(service.url + "/health", timeout=5).json()["stats"]
    for job in jobs:
        assert np.allclose(concurrent[job], sequential[job], atol=1e-5), job
    batches = after["batches"] - before["batches"]
    assert batches < len(jobs), "concurrent requests should have shared model calls"
    assert after["largest_batch"] > 1


def test_truncation_of_text_over_the_context_is_silent_and_consistent(service):
    long_text = "a photo of a red circle " + "and more words " * 200
    body = embed(service, data={"text": [long_text, long_text[:2000]]})
    assert np.allclose(body["text_embeddings"][0], body["text_embeddings"][1])


def test_request_over_the_body_limit_is_413_over_real_http(service):
    big = b"\xff\xd8" + os.urandom(31 * 1024 * 1024)
    response = requests.post(service.url + "/embed", files={"image": ("big.jpg", big)}, timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert requests.get(service.url + "/health", timeout=5).status_code == 200


def test_sigterm_stops_the_server_within_cloud_runs_ten_seconds(tmp_path):
    with run_service("server", {"CLIP_MODEL": "demo"}, tmp_path) as running:
        assert embed(running, data={"text": "hello"})["embedding"]
        running.process.send_signal(signal.SIGTERM)
        running.process.wait(timeout=10)
        assert running.process.returncode == 0
        assert "Shutting down" in running.logs() or "Handling signal" in running.logs()
        assert '"requestUrl": "/embed"' in running.logs()  # the log thread's lines were written out
