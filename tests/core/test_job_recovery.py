"""Jobs outlive their process (in process: two apps on one file:// store, the first one "lost").

The first app's heartbeat is stopped and its model held, as if its process had been SIGKILLed
mid-job; the second app takes the job over from the spooled request and delivers exactly the
synchronous answer. The SIGKILL itself, through gunicorn, is in tests/reliability/test_sigkill.py.
"""

from __future__ import annotations

import base64
import io
import json
import threading

import pytest

from core.deferred import spool
from server.app import create_app
from server.backends.fake import FakeClipBackend
from server.models import resolve_spec
from server.settings import ServerSettings
from tests.callback_receiver import SECRET
from tests.conftest import wait_until
from tests.media import encode, photo_like

pytestmark = pytest.mark.unit


class HeldBackend(FakeClipBackend):
    """The fake CLIP model, whose forward() never returns: the process is "gone" mid-job."""

    def warmup_batches(self, batch_size):
        return []

    def forward(self, kind, batch):
        threading.Event().wait()


_started: list = []  # recoveries to stop after each test: their beats would write into removed tmp dirs


@pytest.fixture(autouse=True)
def _stop_recoveries():
    yield
    while _started:
        _started.pop().stop()


def make_app(receiver, store, backend=FakeClipBackend, recover=True, **overrides):
    values = {"clip_model": "fake", "callback_secret": SECRET, "callback_backoff_s": 0.01,
              "callback_allowed_hosts": (receiver.host,), "job_store_uri": f"file://{store}", "job_lease_s": 1.0,
              **overrides}
    settings = ServerSettings.from_env({}, **values)
    app = create_app(settings, backend=backend(settings, resolve_spec(settings)))
    wait_until(lambda: app.extensions["model_runner"].batcher.state == "ready", 10)
    if recover:
        _started.append(app.extensions["async_jobs"].start_recovery(app))
    return app


PNG = encode(photo_like(40, 30), "PNG")
REQUESTS = {  # every way a request reaches a callback route: multipart, JSON, a raw body, a query
    "multipart": dict(path="/embed", data={"image": (io.BytesIO(PNG), "p.png"), "text": ["a", "b"]}),
    "json": dict(path="/embed", json={"texts": ["a red circle"], "images": [base64.b64encode(PNG).decode()]}),
    "raw": dict(path="/embed", data=PNG, content_type="image/png"),
    "classify": dict(path="/classify", data={"image": (io.BytesIO(PNG), "p.png"), "labels": '["cat","dog"]'}),
    "openai": dict(path="/v1/embeddings", json={"input": ["hello"], "model": "x"}),
}


def with_callback(name: str, url: str) -> dict:
    request = {key: (dict(value) if isinstance(value, dict) else value) for key, value in REQUESTS[name].items()}
    if "json" in request:
        request["json"]["callback_url"] = url
    elif isinstance(request.get("data"), dict):
        request["data"]["callback_url"] = url
    else:
        request["query_string"] = {"callback_url": url}
    return request


def fresh(request: dict) -> dict:
    """A copy whose file objects can be read again."""
    data = request.get("data")
    if isinstance(data, dict):
        request = {**request, "data": {k: (io.BytesIO(v[0].getvalue()), v[1]) if isinstance(v, tuple) else v
                                       for k, v in data.items()}}
    return request


@pytest.mark.parametrize("name", list(REQUESTS))
def test_a_job_whose_process_is_lost_is_run_again_elsewhere_and_delivers_the_synchronous_answer(
        name, receiver, tmp_path):
    lost = make_app(receiver, tmp_path, backend=HeldBackend)
    accepted = lost.test_client().post(**fresh(with_callback(name, receiver.url(f"/{name}"))))
    assert accepted.status_code == 202, accepted.get_json()
    job_id = accepted.get_json()["job_id"]
    assert (tmp_path / "spool" / lost.import_name / job_id).exists()  # spooled before the 202
    lost.extensions["async_jobs"].recovery.stop()  # its heartbeat ends, as with SIGKILL

    survivor = make_app(receiver, tmp_path)
    (got,) = receiver.wait_for(1, 15)
    sync = survivor.test_client().post(**fresh(REQUESTS[name]))
    assert sync.status_code == 200
    body = json.loads(got.body)
    assert got.signature_ok and got.headers["X-Job-Id"] == job_id
    assert body == {**sync.get_json(), "job_id": job_id, "status": "succeeded"}
    record = wait_until(lambda: (r := survivor.test_client().get(f"/jobs/{job_id}").get_json())
                        ["callback"]["state"] == "delivered" and r, 10)
    assert record["attempt"] == 2 and "owner" not in record
    # final: nothing left to take over. The record is saved before the spool is dropped (a crash in
    # between leaves a spool whose record is final, which recovery just drops), so wait for it.
    assert wait_until(lambda: not (tmp_path / "spool" / lost.import_name / job_id).exists(), 10)


def test_a_job_that_loses_its_process_every_time_ends_failed_worker_lost(receiver, tmp_path):
    first = make_app(receiver, tmp_path, backend=HeldBackend, job_max_attempts=2)
    job_id = first.test_client().post("/embed", data={"text": "x", "callback_url": receiver.url()}).get_json()["job_id"]
    first.extensions["async_jobs"].recovery.stop()
    second = make_app(receiver, tmp_path, backend=HeldBackend, job_max_attempts=2)  # takes it, then is lost too
    wait_until(lambda: second.extensions["async_jobs"].holds(job_id), 10)
    second.extensions["async_jobs"].recovery.stop()
    make_app(receiver, tmp_path, job_max_attempts=2)
    (got,) = receiver.wait_for(1, 15)
    body = json.loads(got.body)
    assert body["status"] == "failed" and body["error"]["code"] == "worker_lost" and body["job_id"] == job_id


def test_a_finished_job_whose_callback_was_not_final_is_delivered_again_with_the_same_body(receiver, tmp_path):
    receiver.script = [(503, {})] * 50  # the receiver is down while the first process lives
    first = make_app(receiver, tmp_path, callback_max_attempts=50, callback_backoff_s=5.0)
    job_id = first.test_client().post("/embed", data={"text": "x", "callback_url": receiver.url()}).get_json()["job_id"]
    first_body = receiver.wait_for(1, 10)[0].body
    first.extensions["async_jobs"].recovery.stop()  # lost while waiting to retry
    receiver.script.clear()
    make_app(receiver, tmp_path)
    wait_until(lambda: any(r.answered == 200 for r in receiver.received), 15)
    again = [r for r in receiver.received if r.answered == 200][0]
    assert again.body == first_body and again.headers["X-Job-Id"] == job_id


def test_without_recovery_nothing_is_spooled_and_the_store_holds_only_records(receiver, tmp_path):
    app = make_app(receiver, tmp_path, recover=False)
    assert app.test_client().post("/embed", data={"text": "x", "callback_url": receiver.url()}).status_code == 202
    receiver.wait_for(1)
    assert not (tmp_path / "spool").exists()


def test_a_spool_round_trips_and_refuses_truncated_bytes(tmp_path, receiver):
    app = make_app(receiver, tmp_path, recover=False)
    form = {"text": ["a", "b"], "image": (io.BytesIO(PNG), "p.png")}
    with app.test_request_context("/embed?x=1", method="POST", data=form):
        blob = spool.capture("http://h/hook")
    loaded = spool.load(blob)
    assert loaded.form == [["text", "a"], ["text", "b"]] and loaded.file_data == [PNG] and loaded.query_string == "x=1"
    with pytest.raises(ValueError):
        spool.load(blob[:-1])


def test_submits_get_a_clear_503_when_the_job_store_is_down(receiver, tmp_path):
    app = make_app(receiver, tmp_path)
    (tmp_path / "spool").write_bytes(b"")  # a file where the spool folder goes: every write there fails
    refused = app.test_client().post("/embed", data={"text": "x", "callback_url": receiver.url()})
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "job_store_unavailable"
    assert refused.headers["Retry-After"]


@pytest.fixture(params=["gs", "redis"])
def shared_store(request, tmp_path):
    """A job store every instance reaches: a bucket on the storage emulator, or a real redis-server."""
    if request.param == "gs":
        yield f"gs://{request.getfixturevalue('bucket')}/jobs/clip"
        return
    from tests.core.test_rate_limit_redis import start_redis

    server, port = start_redis(tmp_path)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()


@pytest.mark.integration
def test_with_a_shared_store_another_instance_takes_the_job_over(receiver, shared_store, tmp_path):
    lost = make_app(receiver, tmp_path, backend=HeldBackend, job_store_uri=shared_store)
    job_id = lost.test_client().post("/embed", data={"text": "x", "callback_url": receiver.url()}).get_json()["job_id"]
    assert job_id in lost.extensions["async_jobs"].store.spooled_ids(lost.import_name)
    lost.extensions["async_jobs"].recovery.stop()
    survivor = make_app(receiver, tmp_path, job_store_uri=shared_store)
    (got,) = receiver.wait_for(1, 20)
    assert json.loads(got.body)["status"] == "succeeded" and got.headers["X-Job-Id"] == job_id
    wait_until(lambda: job_id not in survivor.extensions["async_jobs"].store.spooled_ids(lost.import_name), 10)
