"""GET /metrics from a real gunicorn with two worker processes: Prometheus text that parses, counts
every worker's traffic, moves with it, and is behind the API key unless METRICS_PUBLIC is set."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_service, wait_until
from tests.media import encode

pytestmark = pytest.mark.integration

KEY = {"X-API-Key": "k"}
PNG = encode(Image.new("RGB", (40, 30), (30, 200, 30)), "PNG")


def scrape(url: str, headers=KEY) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = requests.get(url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **labels) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and set(labels.items()) <= set(sample_labels))


def test_metrics_add_up_both_workers_and_move_with_traffic(tmp_path):
    env = {"CLIP_MODEL": "fake", "WEB_WORKERS": "2", "WEB_THREADS": "4", "API_KEY": "k", "MAX_QUEUE": "4",
           "MAX_INPUTS": "4", "MAX_LABELS": "4"}
    with run_service("server", env, tmp_path) as service:
        wait_until(lambda: service.logs().count("clip-server ready") == 2, 30)  # both workers loaded
        assert requests.get(service.url + "/metrics", timeout=5).status_code == 401
        before = scrape(service.url)
        with ThreadPoolExecutor(8) as pool:
            texts = list(pool.map(lambda n: requests.post(service.url + "/embed", data={"text": f"t{n}"},
                                                          headers=KEY, timeout=10).status_code, range(40)))
            images = list(pool.map(lambda n: requests.post(service.url + "/embed",
                                                           files={"image": ("a.png", PNG)}, headers=KEY,
                                                           timeout=10).status_code, range(10)))
        assert texts == [200] * 40 and images == [200] * 10
        too_many = requests.post(service.url + "/embed", data={"text": ["a"] * 5}, headers=KEY, timeout=10)
        assert too_many.status_code == 413
        assert requests.post(service.url + "/embed", data={"text": "x"}, timeout=10).status_code == 401
        after = scrape(service.url)

    def moved(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("http_requests_total", route="/embed", method="POST", status="200") == 50
    assert moved("http_requests_total", route="/embed", status="401") == 1
    assert moved("http_request_duration_seconds_count", route="/embed") == 52
    assert moved("http_rejections_total", status="413", reason="too_many_inputs") == 1
    assert moved("images_processed_total") == 10 and moved("texts_processed_total") == 40
    assert moved("inference_batch_size_count", kind="text") >= 1
    assert moved("inference_batch_size_sum", kind="text") == 40
    assert moved("inference_batch_size_sum", kind="image") == 10
    assert moved("inference_batch_fill_ratio_count", kind="text") == moved("inference_batch_size_count", kind="text")
    assert moved("model_forward_seconds_count") == moved("inference_batch_size_count")
    assert moved("inference_queue_wait_seconds_count") == 50
    # Both processes' samples are in one scrape: each worker's load time, ready flags summed.
    assert total(after, "model_ready") == 2
    assert total(after, "model_load_seconds") > 0
    assert ("inference_queue_depth", ()) in after

