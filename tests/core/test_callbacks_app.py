"""callback_url on the CLIP routes (fake backend, in process): 202, signed result, status_url, 4xx, 429."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest

from server.app import create_app
from server.backends.fake import FakeClipBackend
from server.models import resolve_spec
from server.settings import ServerSettings
from tests.callback_receiver import SECRET, Receiver
from tests.conftest import wait_until
from tests.media import encode, photo_like

pytestmark = pytest.mark.unit


def make_client(receiver: Receiver | None = None, backend=None, **overrides):
    values = {"clip_model": "fake", "callback_secret": SECRET, "callback_backoff_s": 0.01,
              "callback_allowed_hosts": (receiver.host,) if receiver else (), **overrides}
    settings = ServerSettings.from_env({}, **values)
    if backend is not None:
        backend = backend(settings, resolve_spec(settings))
    client = create_app(settings, backend=backend).test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 10)
    return client


def job_record(client, status_url: str, **kwargs) -> dict:
    response = client.get(status_url.replace("http://localhost", ""), **kwargs)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def wait_for_delivery(client, status_url: str) -> dict:
    return wait_until(lambda: (r := job_record(client, status_url))["callback"]["state"] in ("delivered", "failed")
                      and r, 10)


def test_form_field_callback_gets_202_then_the_signed_synchronous_body(receiver):
    client = make_client(receiver)
    sync = client.post("/embed", data={"text": ["a red circle", "a blue square"]}).get_json()
    accepted = client.post("/embed", data={"text": ["a red circle", "a blue square"], "callback_url": receiver.url()})
    assert accepted.status_code == 202
    body = accepted.get_json()
    assert set(body) == {"job_id", "status", "status_url"} and body["status"] == "queued"
    assert body["status_url"] == f"http://localhost/jobs/{body['job_id']}" == accepted.headers["Location"]
    (got,) = receiver.wait_for(1)
    assert got.signature_ok and got.headers["X-Job-Id"] == body["job_id"]
    result = json.loads(got.body)
    assert result == {**sync, "job_id": body["job_id"], "status": "succeeded"}
    record = wait_for_delivery(client, body["status_url"])
    assert record["status"] == "succeeded" and record["result"] == result
    assert record["callback"] == {"state": "delivered", "attempts": 1, "last_status": 200, "error": None}


def test_query_parameter_and_json_key_work_too(receiver):
    client = make_client(receiver)
    image = base64.b64encode(encode(photo_like(40, 30))).decode()
    by_query = client.post(f"/embed?callback_url={receiver.url('/q')}", json={"images": [image]})
    by_json = client.post("/classify", json={"images": [image], "labels": ["cat", "dog"],
                                             "callback_url": receiver.url("/j")})
    assert by_query.status_code == 202 and by_json.status_code == 202
    got = {r.path: json.loads(r.body) for r in receiver.wait_for(2)}
    assert len(got["/q"]["embedding"]) == 64 and got["/q"]["status"] == "succeeded"
    assert [label["label"] for label in got["/j"]["labels"]] and got["/j"]["job_id"] == by_json.get_json()["job_id"]
    not_a_string = client.post("/embed", json={"texts": ["x"], "callback_url": 5})
    assert not_a_string.status_code == 400 and not_a_string.get_json()["error"]["code"] == "invalid_callback_url"


def test_fails_twice_then_succeeds_is_one_accepted_delivery_and_status_url_says_delivered(receiver):
    receiver.script = [(500, {}), (502, {})]
    client = make_client(receiver)
    accepted = client.post("/embed", data={"text": "x", "callback_url": receiver.url()}).get_json()
    record = wait_for_delivery(client, accepted["status_url"])
    assert record["callback"] == {"state": "delivered", "attempts": 3, "last_status": 200, "error": None}
    assert len(receiver.accepted()) == 1 and len(receiver.received) == 3
    assert len({r.body for r in receiver.received}) == 1  # the same body every time


@pytest.mark.parametrize("url, code", [
    ("https://127.0.0.1/hook", "invalid_callback_url"),        # loopback, not allow-listed
    ("http://hooks.example.com/hook", "invalid_callback_url"),  # plain http
    ("https://169.254.169.254/latest", "invalid_callback_url"),  # the metadata server
    ("https://metadata.google.internal/", "invalid_callback_url"),
    ("not a url", "invalid_callback_url"),
])
def test_a_callback_url_failing_the_guard_is_a_400_at_once(receiver, url, code):
    client = make_client(receiver)
    response = client.post("/embed", data={"text": "x", "callback_url": url})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code
    assert client.post("/embed", data={"text": "x"}).status_code == 200


def test_bad_input_is_still_refused_at_once_and_nothing_is_delivered(receiver):
    client = make_client(receiver)
    truncated = encode(photo_like(64, 64))[:200]
    cases = [({"image": (io.BytesIO(truncated), "t.jpg")}, 400),
             ({"text": "   "}, 400), ({"labels": "cat"}, 400)]
    for data, status in cases:
        response = client.post("/embed", data={**data, "callback_url": receiver.url()})
        assert response.status_code == status, response.get_json()
    assert client.post("/classify", data={"callback_url": receiver.url()}).status_code == 400
    assert receiver.received == []


def test_an_image_too_large_for_the_memory_budget_is_refused_before_the_202(receiver):
    # The check before the 202 decodes within the same budget as a request: an image that can
    # never fit is a 413 at once, not an accepted job that fails later.
    client = make_client(receiver, decode_memory_budget_mb=1.0)
    large = encode(photo_like(1500, 1500), "PNG")
    response = client.post("/embed", data={"image": (io.BytesIO(large), "large.png"), "callback_url": receiver.url()})
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "input_too_large_to_decode"
    small = encode(photo_like(64, 64), "PNG")
    response = client.post("/embed", data={"image": (io.BytesIO(small), "small.png"), "callback_url": receiver.url()})
    assert response.status_code == 202, response.get_json()  # a small one is accepted as before


def test_without_a_secret_callbacks_are_refused_clearly(receiver):
    client = make_client(receiver, callback_secret=None)
    response = client.post("/embed", data={"text": "x", "callback_url": receiver.url()})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "callbacks_disabled" and "CALLBACK_SECRET" in response.get_json()[
        "error"]["message"]


class BlockingBackend(FakeClipBackend):
    """Fake vectors, but text batches wait until the test opens the gate (and 'boom' fails)."""

    gate = threading.Event()

    def forward(self, kind, batch):
        if kind == "text" and len(batch) == 1 and batch[0][0] == ord("b"):
            raise RuntimeError("boom")
        if kind == "text" and not self.gate.wait(10):
            raise RuntimeError("gate never opened")
        return super().forward(kind, batch)

    def warmup_batches(self, batch_size):
        return [(kind, items) for kind, items in super().warmup_batches(batch_size) if kind != "text"]


def test_a_full_async_queue_answers_429_with_retry_after(receiver):
    BlockingBackend.gate.clear()
    client = make_client(receiver, backend=BlockingBackend, async_workers=1, async_queue=2)
    queue = client.application.extensions["async_jobs"]._queue
    statuses = [client.post("/embed", data={"text": "t0", "callback_url": receiver.url()}).status_code]
    wait_until(lambda: queue.qsize() == 0, 5)  # the one job thread has taken it (and waits at the gate)
    statuses += [client.post("/embed", data={"text": f"t{n}", "callback_url": receiver.url()}).status_code
                 for n in (1, 2)]
    assert queue.qsize() == 2  # one runs, two wait: the queue is full
    full = client.post("/embed", data={"text": "t9", "callback_url": receiver.url()})
    BlockingBackend.gate.set()
    assert statuses == [202, 202, 202]
    assert full.status_code == 429 and full.get_json()["error"]["code"] == "overloaded"
    assert int(full.headers["Retry-After"]) >= 1
    assert len(receiver.wait_for(3)) == 3


def test_a_job_that_fails_is_delivered_as_failed_with_the_error(receiver):
    BlockingBackend.gate.set()
    client = make_client(receiver, backend=BlockingBackend)
    accepted = client.post("/embed", data={"text": "b", "callback_url": receiver.url()}).get_json()
    (got,) = receiver.wait_for(1)
    assert json.loads(got.body) == {"job_id": accepted["job_id"], "status": "failed",
                                    "error": {"code": "inference_failed", "message": json.loads(got.body)["error"][
                                        "message"]}}
    assert job_record(client, accepted["status_url"])["status"] == "failed"


def test_jobs_route_needs_the_api_key_like_every_route(receiver):
    client = make_client(receiver, api_key="k3y")
    headers = {"X-API-Key": "k3y"}
    accepted = client.post("/embed", data={"text": "x", "callback_url": receiver.url()}, headers=headers).get_json()
    path = f"/jobs/{accepted['job_id']}"
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer k3y"}).status_code == 200
    missing = client.get("/jobs/nope", headers=headers)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "job_not_found"


def test_drain_delivers_unfinished_jobs_as_shutting_down_and_refuses_new_ones(receiver):
    BlockingBackend.gate.clear()
    client = make_client(receiver, backend=BlockingBackend, async_workers=1)
    jobs = client.application.extensions["async_jobs"]
    ids = [client.post("/embed", data={"text": f"t{n}", "callback_url": receiver.url()}).get_json()["job_id"]
           for n in range(2)]
    jobs.begin_shutdown(graceful_timeout_s=1.0)
    refused = client.post("/embed", data={"text": "late", "callback_url": receiver.url()})
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "shutting_down"
    assert refused.headers["Retry-After"] == "1"
    started = time.monotonic()
    jobs.drain()
    assert time.monotonic() - started < 1.5  # within the graceful timeout
    bodies = {json.loads(r.body)["job_id"]: json.loads(r.body) for r in receiver.wait_for(2, 5)}
    assert set(bodies) == set(ids)
    assert all(b["status"] == "failed" and b["error"]["code"] == "shutting_down" for b in bodies.values())
    BlockingBackend.gate.set()
