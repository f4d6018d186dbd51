"""A cold multi-process instance never answers 503 after its first 200; a failed load is retried.

Real gunicorn on loopback with three processes of the fake CLIP backend whose loads are staged to
end at different times (core/model/fake_faults.py), as replicas loading onto one GPU do.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import run_service, wait_until

pytestmark = [pytest.mark.integration]
REQUESTS = 30


def burst(url: str, count: int = REQUESTS) -> list[int]:
    """``count`` concurrent /embed requests, each on its own connection (so they spread over the processes)."""
    def one(n: int) -> int:
        with requests.Session() as session:
            return session.post(url + "/embed", json={"texts": [f"text {n}"]}, timeout=60).status_code

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_requests_right_after_the_first_200_wait_for_loading_processes_instead_of_503(tmp_path):
    env = {"CLIP_MODEL": "fake", "WEB_WORKERS": "3", "WEB_THREADS": "16", "FAKE_LOAD_DELAY_S": "0,3,5"}
    with run_service("server", env, tmp_path) as service:  # returns on the first /health 200
        statuses = burst(service.url)
        assert statuses.count(503) == 0 and statuses == [200] * REQUESTS, statuses
        # Some of them did land on a process still loading and waited for it there.
        assert "request waits for the model to load" in service.logs()


def test_a_process_whose_model_fails_to_load_exits_and_its_replacement_serves(tmp_path):
    env = {"CLIP_MODEL": "fake", "WEB_WORKERS": "3", "WEB_THREADS": "16", "FAKE_LOAD_FAILURES": "1",
           "FAKE_LOAD_DELAY_S": "0,0,0,1"}
    with run_service("server", env, tmp_path) as service:
        wait_until(lambda: "so that another is started" in service.logs(), 20)
        # The failed process leaves and gunicorn boots a fourth, which loads; none stays half-ready.
        wait_until(lambda: service.logs().count("Booting worker") >= 4, 30)
        wait_until(lambda: all(status == 200 for status in burst(service.url, 12)), 30, interval_s=0.5)
