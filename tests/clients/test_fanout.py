"""WorkerPool against real servers: spreading, Retry-After, a stopped instance taken out and probed back in.

The fake-model CLIP servers stand in for workers here: the pool is the same for any service, and
their requests cost nothing, so these timings depend on the pool alone. The Whisper path with a
killed worker is tested in test_transcribe_cli.py.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from inference_client import NoWorkerAvailable, WorkerPool

from tests.clients.conftest import API_KEY, kill
from tests.conftest import free_port, wait_until
from tests.media import SENTENCES
from tests.worker.conftest import assert_heard_all

pytestmark = pytest.mark.integration


def embed(http):
    """One cheap request."""
    return http.send("POST", "/embed", data={"text": "a photo of a red circle"}).json()["embedding"]


def test_transcriptions_spread_over_workers(workers, clips):
    pool = WorkerPool([w.url for w in workers[:2]], API_KEY)  # the third is test_transcribe_cli.py's to kill
    with ThreadPoolExecutor(6) as threads:
        results = list(threads.map(lambda clip: pool.transcribe(clip, "json"), clips))
    assert_heard_all((result["text"], script) for result, script in zip(results, SENTENCES))
    served = [stats["succeeded"] for stats in pool.stats()]
    assert sum(served) == len(clips) and min(served) >= 2, served
    assert all(stats["outstanding"] == 0 for stats in pool.stats())


def test_least_outstanding_requests_wins(fake_servers):
    pool = WorkerPool([s.url for s in fake_servers])
    busy, idle = pool.workers
    busy.outstanding = 3  # as if three long calls were in flight there
    for _ in range(4):
        pool.call(embed)
    assert (busy.succeeded, idle.succeeded) == (0, 4)
    busy.outstanding = 0
    for _ in range(4):
        pool.call(embed)
    assert (busy.succeeded, idle.succeeded) == (2, 6)  # equal load: they take turns


def test_a_retry_goes_to_another_instance(fake_servers):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused, as after a crash
    pool = WorkerPool([dead, fake_servers[0].url], max_attempts=2, failure_threshold=100, backoff_s=0.01)
    for _ in range(6):  # two attempts each are enough only if the retry avoids the URL that just failed
        assert len(pool.call(embed)) == 64
    stats = {s["url"]: s for s in pool.stats()}
    # Least recently chosen, it is tried first every time (the breaker, off here, is what stops that).
    assert stats[dead]["errors"] == {"connection_failed": 6} and stats[fake_servers[0].url]["succeeded"] == 6


def test_stopped_instance_is_taken_out_and_probed_back_in(fake_servers):
    stopped, healthy = fake_servers
    events = []
    pool = WorkerPool([stopped.url, healthy.url], timeout=0.5, failure_threshold=2, reset_s=0.3, max_reset_s=0.6,
                      probe_timeout_s=0.3, backoff_s=0.01, on_event=lambda *event: events.append(event))
    kill(stopped, signal.SIGSTOP)  # accepts connections (the kernel does) but never answers
    try:
        for _ in range(6):
            assert len(pool.call(embed)) == 64  # every call succeeds: the ones sent to it are retried
        state = {s["url"]: s for s in pool.stats()}[stopped.url]
        assert state["state"] != "closed" and state["errors"] == {"client_timeout": 2}
        assert ("out", stopped.url) in [event[:2] for event in events]
    finally:
        kill(stopped, signal.SIGCONT)

    def back_in():
        pool.call(embed)
        return pool.workers[0].succeeded > 0

    try:
        wait_until(back_in, timeout_s=20, interval_s=0.1)
    except TimeoutError:
        print(events, pool.stats(), stopped.logs()[-3000:])
        raise
    assert ("back", stopped.url) in [event[:2] for event in events]
    assert pool.stats()[0]["state"] == "closed"


def test_pool_waits_for_retry_after(rate_limited_server):
    events = []
    pool = WorkerPool(rate_limited_server.url, backoff_s=0.01, on_event=lambda *event: events.append(event))
    time.sleep(1.1)  # a fresh one-second window
    started = time.monotonic()
    for _ in range(3):
        pool.call(embed)
    assert time.monotonic() - started >= 1.5  # three calls at one per second
    assert any("429 rate_limited" in detail for kind, url, detail in events if kind == "retry")
    assert pool.stats()[0]["state"] == "closed"  # load shedding is no reason to take it out


def test_no_worker_at_all_fails_in_bounded_time():
    pool = WorkerPool([f"http://127.0.0.1:{free_port()}"], max_wait_s=1.0, reset_s=0.2, max_attempts=10,
                      backoff_s=0.01, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(NoWorkerAvailable, match="last error: .*connection_failed"):
        pool.call(embed)
    assert time.monotonic() - started < 5
