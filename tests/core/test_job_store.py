"""Job records: the directory store (the default) is shared by an instance's processes; Redis and gs:// by all."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from core.deferred.job_store import (
    KEY_PREFIX,
    DirectoryJobStore,
    GcsJobStore,
    MemoryJobStore,
    RedisJobStore,
    make_job_store,
)
from core.settings import SettingsError
from server.settings import ServerSettings
from tests.callback_receiver import Receiver
from tests.conftest import run_service, wait_until
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
def test_the_store_follows_job_store_uri_not_the_rate_limit_storage(tmp_path):
    assert isinstance(make_job_store("memory://", 10), MemoryJobStore)
    assert isinstance(make_job_store("redis://127.0.0.1:1", 10), RedisJobStore)  # no connection until used
    assert isinstance(make_job_store("gs://bucket/jobs", 10), GcsJobStore)
    assert isinstance(make_job_store(f"file://{tmp_path}/jobs", 10), DirectoryJobStore)
    settings = ServerSettings.from_env({"RATE_LIMIT_STORAGE_URI": "redis://127.0.0.1:1"})
    assert settings.job_store_uri == "file:///tmp/inference-jobs"  # shared by the instance's processes
    for bad in ("postgres://x", "gs://", "/tmp/jobs"):
        with pytest.raises(SettingsError, match="JOB_STORE_URI"):
            ServerSettings.from_env({"JOB_STORE_URI": bad})


@pytest.mark.unit
def test_directory_store_is_shared_by_processes_bounded_and_expires(tmp_path):
    first, sibling = DirectoryJobStore(tmp_path, ttl_s=60), DirectoryJobStore(tmp_path, ttl_s=60)
    first.save({"job_id": "a1", "status": "queued"})
    first.save({"job_id": "a1", "status": "succeeded", "result": {"x": [1, 2]}})
    assert sibling.get("a1") == {"job_id": "a1", "status": "succeeded", "result": {"x": [1, 2]}}
    assert sibling.get("missing") is None and sibling.get("../etc/passwd") is None
    assert [p.name for p in tmp_path.iterdir()] == ["a1.json"]  # no temporary files left behind
    expiring = DirectoryJobStore(tmp_path, ttl_s=0.2)
    expiring.save({"job_id": "b1", "status": "queued"})
    time.sleep(0.3)
    assert expiring.get("b1") is None and not (tmp_path / "b1.json").exists()
    # The cap removes the oldest finished records; a job still to run or to deliver is never dropped.
    capped = DirectoryJobStore(tmp_path / "capped", ttl_s=60, max_records=3)
    delivered = {"status": "succeeded", "callback": {"state": "delivered"}}
    records = [{"status": "queued", "callback": {"state": "pending"}}, delivered,
               {"status": "succeeded", "callback": {"state": "pending"}}, delivered,
               {"status": "running", "callback": {"state": "pending"}}, {"status": "queued"}]
    for n, record in enumerate(records):
        capped.save({"job_id": f"j{n}", **record})
        saved = time.time() - 10 + n  # in this order, all within the TTL
        os.utime(tmp_path / "capped" / f"j{n}.json", (saved, saved))
    # j1 made room for j3, j3 for j4; j5 found only unfinished jobs and went over the cap
    assert sorted(p.name for p in (tmp_path / "capped").iterdir()) == ["j0.json", "j2.json", "j4.json", "j5.json"]


@pytest.mark.integration
def test_gcs_store_shares_records_between_instances(bucket):  # noqa: F811
    writer, reader = GcsJobStore(f"gs://{bucket}/jobs/clip", 60), GcsJobStore(f"gs://{bucket}/jobs/clip/", 60)
    writer.save({"job_id": "g1", "status": "queued"})
    writer.save({"job_id": "g1", "status": "succeeded", "result": {"dim": 64}})
    assert reader.get("g1") == {"job_id": "g1", "status": "succeeded", "result": {"dim": 64}}
    assert reader.get("nope") is None and reader.get("a/b") is None
    short = GcsJobStore(f"gs://{bucket}/jobs/clip", 0.2)
    short.save({"job_id": "g2", "status": "queued"})
    time.sleep(0.3)
    assert short.get("g2") is None  # past the TTL: unknown, though the object lingers until the lifecycle rule


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
        first = make_client(receiver, job_store_uri=redis_url)
        second = make_client(receiver, job_store_uri=redis_url)
        accepted = first.post("/embed", data={"text": "x", "callback_url": receiver.url()}).get_json()
        record = wait_for_delivery(second, accepted["status_url"])  # asked of the other instance
        assert record["status"] == "succeeded" and record["callback"]["state"] == "delivered"
        assert len(record["result"]["embedding"]) == 64
    finally:
        receiver.close()


@pytest.mark.integration
def test_every_poll_of_20_jobs_finds_its_job_whichever_of_3_gunicorn_processes_answers(tmp_path, receiver):
    """The default store: 20 callback jobs on WEB_WORKERS=3, each polled 50 times, never a 404.

    Before, the store was per process: about two polls in three landed on a process that did not know the job.
    """
    env = {"CLIP_MODEL": "fake", "WEB_WORKERS": "3", "WEB_THREADS": "4", "CALLBACK_SECRET": "dev-secret",
           "CALLBACK_ALLOWED_HOSTS": receiver.host, "JOB_STORE_URI": f"file://{tmp_path}/jobs"}
    with run_service("server", env, tmp_path, ready_timeout_s=180) as running:
        session = requests.Session()
        accepted = [session.post(running.url + "/embed", data={"text": f"job {n}", "callback_url": receiver.url()},
                                 timeout=30) for n in range(20)]
        assert all(a.status_code == 202 for a in accepted), [a.text for a in accepted]
        status_urls = [a.json()["status_url"] for a in accepted]

        def poll(url: str) -> list[int]:
            with requests.Session() as own:  # a new connection per poll: gunicorn spreads them over its processes
                return [own.get(url, headers={"Connection": "close"}, timeout=30).status_code for _ in range(50)]

        with ThreadPoolExecutor(4) as pool:
            codes = [code for codes in pool.map(poll, status_urls) for code in codes]
        assert len(codes) == 1000 and codes.count(404) == 0, {code: codes.count(code) for code in set(codes)}
        final = [wait_until(lambda url=url: session.get(url, timeout=30).json()["status"] == "succeeded", 60)
                 for url in status_urls]
        assert all(final)
        pids = {line for line in running.logs().splitlines() if "Booting worker with pid" in line}
        assert len(pids) == 3, running.logs()[-2000:]


@pytest.mark.unit
def test_directory_store_sweeps_the_heartbeats_of_processes_gone(tmp_path):
    store = DirectoryJobStore(tmp_path, ttl_s=60)
    store.beat("gone", 0.05)
    store.beat("alive", 60)
    time.sleep(0.1)
    assert not store.owner_alive("gone") and store.owner_alive("alive")
    store.save({"job_id": "j1", "status": "queued"})  # a new job: the store's sweep runs
    assert sorted(p.name for p in (tmp_path / "owners").iterdir()) == ["alive"]
    assert store.owner_alive("alive") and not store.owner_alive("gone")
