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
    # The first load ends 3 s in, so that all three processes have booted and take connections by
    # then (on a busy host, importing the app takes seconds); the others end 3 and 5 s later.
    env = {"CLIP_MODEL": "fake", "WEB_WORKERS": "3", "WEB_THREADS": "16", "FAKE_LOAD_DELAY_S": "3,6,8"}
    with run_service("server", env, tmp_path) as service:  # returns on the first /health 200
        statuses = burst(service.url)
        assert statuses.count(503) == 0 and statuses == [200] * REQUESTS, statuses
        # Some of them did land on a process still loading and waited for it there.
        assert "request waits for the model to load" in service.logs()


def test_a_process_whose_model_fails_to_load_exits_and_its_replacement_serves(tmp_path):
    env = {"CLIP_MODEL": "fake", "WEB_WORKERS": "3", "WEB_THREADS": "16", "FAKE_LOAD_CRASHES": "1",
           "FAKE_LOAD_DELAY_S": "0,0,0,1"}
    with run_service("server", env, tmp_path) as service:
        wait_until(lambda: "this process exits so that another is started" in service.logs(), 20)
        # The failed process leaves and gunicorn boots a fourth, which loads; none stays half-ready.
        wait_until(lambda: service.logs().count("Booting worker") >= 4, 30)
        wait_until(lambda: all(status == 200 for status in burst(service.url, 12)), 30, interval_s=0.5)


def test_a_load_that_runs_out_of_memory_after_siblings_serve_is_retried_and_no_request_gets_503(tmp_path):
    # The first process runs out of memory 2 s in, when the others serve and requests wait for it;
    # it loads again in the same process, so they keep waiting and none gets 503.
    env = {"CLIP_MODEL": "fake", "WEB_WORKERS": "3", "WEB_THREADS": "16", "FAKE_LOAD_FAILURES": "1",
           "FAKE_LOAD_DELAY_S": "2,0,0.5,0"}
    with run_service("server", env, tmp_path) as service:
        statuses = burst(service.url)
        assert statuses == [200] * REQUESTS, statuses
        assert "model load ran out of memory; retrying" in service.logs()
        assert service.logs().count("Booting worker") == 3  # nobody had to exit
