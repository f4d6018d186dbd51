"""Under saturating load through real gunicorn, a model that runs out of memory above a batch size
fails no request; /health and /metrics say that the batch limit shrank."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import run_service, wait_until
from tests.reliability.test_cold_start import burst

pytestmark = [pytest.mark.integration]


def test_oom_above_a_batch_size_fails_no_request_and_the_shrunk_limit_shows(tmp_path):
    env = {"CLIP_MODEL": "fake", "WEB_WORKERS": "1", "WEB_THREADS": "32", "MAX_BATCH_SIZE": "16",
           "MAX_WAIT_MS": "50", "FAKE_OOM_ABOVE": "3"}
    with run_service("server", env, tmp_path) as service:
        statuses = burst(service.url, 40)
        assert statuses == [200] * 40, statuses
        health = requests.get(service.url + "/health", timeout=5)
        assert health.status_code == 200, health.text
        batching = health.json()["batching"]
        assert batching["shrunk_after_oom"]["from"] == 16 and batching["max_batch_size"] <= 3
        metrics = wait_until(lambda: (text := requests.get(service.url + "/metrics", timeout=5).text)
                             and 'inference_out_of_memory_total{outcome="split"}' in text and text, 10)
        limit = next(line for line in metrics.splitlines() if line.startswith("inference_batch_limit "))
        assert float(limit.split()[1]) <= 3
