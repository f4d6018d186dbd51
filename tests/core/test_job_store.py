"""Job records: the memory store expires them after JOB_TTL; Redis (a real redis-server) shares them."""

from __future__ import annotations

import pytest

from core.job_store import KEY_PREFIX, MemoryJobStore, RedisJobStore, make_job_store
from tests.callback_receiver import Receiver
from tests.core.test_callbacks_app import SECRET, make_client, wait_for_delivery
from tests.core.test_rate_limit_redis import redis_url  # noqa: F401 - the real redis-server fixture


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.mark.unit
def test_memory_store_keeps_a_record_for_the_ttl_after_its_last_change():
    clock = Clock()
    store = MemoryJobStore(ttl_s=60, clock=clock)
    store.save({"job_id": "a", "status": "queued"})
    clock.now += 50
    store.save({"job_id": "a", "status": "succeeded"})
    clock.now += 50
    assert store.get("a") == {"job_id": "a", "status": "succeeded"}
    clock.now += 11
    assert store.get("a") is None and store.get("never") is None


@pytest.mark.unit
def test_memory_store_hands_out_copies():
    store = MemoryJobStore(ttl_s=60)
    record = {"job_id": "a", "result": {"x": 1}}
    store.save(record)
    record["result"]["x"] = 2
    store.get("a")["result"]["x"] = 3
    assert store.get("a")["result"] == {"x": 1}


@pytest.mark.unit
def test_the_store_follows_the_rate_limit_uri():
    assert isinstance(make_job_store("memory://", 10), MemoryJobStore)
    assert isinstance(make_job_store("redis://127.0.0.1:1", 10), RedisJobStore)  # no connection until used


@pytest.mark.integration
def test_redis_store_round_trip_with_expiry(redis_url):  # noqa: F811
    store = RedisJobStore(redis_url, ttl_s=30)
    store.save({"job_id": "r1", "status": "running", "result": None})
    assert store.get("r1") == {"job_id": "r1", "status": "running", "result": None}
    assert 0 < store._redis.ttl(KEY_PREFIX + "r1") <= 30
    assert store.get("missing") is None


@pytest.mark.integration
def test_two_instances_share_job_records_through_redis(redis_url):  # noqa: F811
    receiver = Receiver(SECRET)
    try:
        first = make_client(receiver, rate_limit_storage_uri=redis_url)
        second = make_client(receiver, rate_limit_storage_uri=redis_url)
        accepted = first.post("/embed", data={"text": "x", "callback_url": receiver.url()}).get_json()
        record = wait_for_delivery(second, accepted["status_url"])  # asked of the other instance
        assert record["status"] == "succeeded" and record["callback"]["state"] == "delivered"
        assert len(record["result"]["embedding"]) == 64
    finally:
        receiver.close()
