"""CLIP /events/pubsub and /events/storage in-process (fake backend) on local folders: shapes, safety, failures."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cloudevents.v1.conversion import to_binary
from cloudevents.v1.http import CloudEvent
from PIL import Image

from core.from_storage import storage
from server.app import create_app
from server.backends.fake import FakeClipBackend
from server.models import resolve_spec
from server.settings import ServerSettings
from tests.conftest import wait_until
from tests.media import encode, photo_like

pytestmark = pytest.mark.unit

RED = encode(Image.new("RGB", (80, 60), (220, 20, 20)))
BLUE = encode(Image.new("RGB", (80, 60), (20, 20, 220)), "PNG")


def make_app(backend_cls=FakeClipBackend, wait_ready=True, **overrides):
    settings = ServerSettings.from_env({}, clip_model="fake", log_level="WARNING", **overrides)
    app = create_app(settings, backend=backend_cls(settings, resolve_spec(settings)))
    client = app.test_client()
    if wait_ready:
        wait_until(lambda: client.get("/health").status_code == 200, 10)
    return app, client


@pytest.fixture
def dirs(tmp_path):
    """An input root with two images and a note, and an output directory beside it."""
    root, out = tmp_path / "in", tmp_path / "out"
    (root / "photos").mkdir(parents=True)
    (root / "photos" / "red.jpg").write_bytes(RED)
    (root / "photos" / "blue.png").write_bytes(BLUE)
    (root / "notes.txt").write_text("not an image")
    return root, out


@pytest.fixture
def client(dirs):
    root, out = dirs
    return make_app(events_output=str(out), events_input_root=str(root))[1]


def push(job=None, *, data: bytes | None = None, attributes=None, message_id="m-1") -> dict:
    """A Pub/Sub push envelope as Pub/Sub sends it."""
    if data is None:
        data = json.dumps(job).encode() if job is not None else b""
    message = {"data": base64.b64encode(data).decode(), "messageId": message_id,
               "publishTime": "2026-01-01T00:00:00Z"}
    if attributes:
        message["attributes"] = attributes
    return {"message": message, "subscription": "projects/p/subscriptions/clip-events"}


def finalized(bucket: str, name: str, generation: str, event_type="google.cloud.storage.object.v1.finalized"):
    """A CloudEvent shaped like Eventarc's Cloud Storage finalize event."""
    return CloudEvent({"type": event_type, "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
                       "subject": f"objects/{name}", "id": f"ce-{name}-{generation}"},
                      {"kind": "storage#object", "bucket": bucket, "name": name, "generation": generation,
                       "contentType": "image/jpeg", "size": "1234"})


def result_of(out, relative: str) -> tuple[str, dict]:
    """The single .json result the CLIP server wrote for ``relative`` (any generation)."""
    matches = [p for p in storage.list_prefix(str(out)) if p.startswith(os.path.join(str(out), "clip", relative + "@"))
               and p.endswith(".json") and not p.endswith(".error.json")]
    assert len(matches) == 1, storage.list_prefix(str(out))
    return matches[0], json.loads(storage.read_bytes(matches[0]))


def test_pubsub_job_writes_the_embedding_then_skips_the_same_generation(client, dirs):
    root, out = dirs
    answer = client.post("/events/pubsub", json=push({"input": (root / "photos" / "red.jpg").as_uri()}))
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["status"] == "succeeded"
    path, result = result_of(out, "photos/red.jpg")
    assert body["results"] == [path]
    assert path.endswith(f"photos/red.jpg@{os.stat(root / 'photos' / 'red.jpg').st_mtime_ns}.json")
    # The same vector /embed gives for the same bytes: one way through the house.
    direct = client.post("/embed", data={"image": (io.BytesIO(RED), "red.jpg")}).get_json()
    assert result["embedding"] == direct["embedding"] and result["dim"] == 64
    assert result["input"] == (root / "photos" / "red.jpg").as_uri()
    written = os.stat(path).st_mtime_ns

    red = (root / "photos" / "red.jpg").as_uri()
    again = client.post("/events/pubsub", json=push({"input": red}, message_id="m-2"))
    assert again.status_code == 200 and again.get_json()["status"] == "skipped"
    assert os.stat(path).st_mtime_ns == written  # not recomputed, not rewritten

    # A new generation of the object (rewritten file) is a new result.
    os.utime(root / "photos" / "red.jpg", ns=(1, 1))
    third = client.post("/events/pubsub", json=push({"input": (root / "photos" / "red.jpg").as_uri()}))
    assert third.get_json()["status"] == "succeeded" and third.get_json()["results"][0].endswith("@1.json")


def test_bare_job_for_cloud_tasks_and_labels_option(client, dirs):
    root, out = dirs
    answer = client.post("/events/pubsub", json={"input": (root / "photos" / "blue.png").as_uri(),
                                                  "labels": ["red", "blue"], "top_k": 1})
    assert answer.status_code == 200 and answer.get_json()["status"] == "succeeded", answer.get_json()
    _, result = result_of(out, "photos/blue.png")
    assert len(result["embedding"]) == 64 and len(result["labels"]) == 1
    assert result["template"] == "a photo of a {}"


class CountingDecodes(FakeClipBackend):
    image_decodes = 0

    def preprocess(self, kind, raw):
        if kind == "image":
            type(self).image_decodes += 1
        return super().preprocess(kind, raw)


def test_an_image_with_labels_is_decoded_once_and_answers_as_embed_and_classify_do(dirs):
    root, out = dirs
    app, client = make_app(CountingDecodes, events_output=str(out), events_input_root=str(root))
    CountingDecodes.image_decodes = 0  # after warm-up
    answer = client.post("/events/pubsub", json={"input": (root / "photos" / "blue.png").as_uri(),
                                                  "labels": ["red", "blue", "green"], "top_k": 2})
    assert answer.status_code == 200, answer.get_json()
    assert CountingDecodes.image_decodes == 1
    _, result = result_of(out, "photos/blue.png")
    embedded = client.post("/embed", data={"image": (io.BytesIO(BLUE), "blue.png")}).get_json()
    classified = client.post("/classify", data={"image": (io.BytesIO(BLUE), "blue.png"),
                                                "labels": ["red", "blue", "green"], "top_k": "2"}).get_json()
    assert result["embedding"] == embedded["embedding"] and result["labels"] == classified["labels"]
    assert len(result["labels"]) == 2


@pytest.mark.parametrize("make_input, code", [
    (lambda root, tmp: (tmp / "secret.jpg").as_uri(), "input_not_allowed"),
    (lambda root, tmp: "file://" + str(root) + "/../secret.jpg", "input_not_allowed"),
    (lambda root, tmp: "file://" + str(root) + "/photos/../../secret.jpg", "input_not_allowed"),
    (lambda root, tmp: (root / "escape.jpg").as_uri(), "input_not_allowed"),  # symlink to outside
    (lambda root, tmp: (root / "escape-dir" / "secret.jpg").as_uri(), "input_not_allowed"),  # dir symlink
    (lambda root, tmp: "file://" + str(root), "input_not_allowed"),  # the root itself
    (lambda root, tmp: "file://other-host/etc/passwd", "invalid_input"),
    (lambda root, tmp: "/etc/passwd", "invalid_input"),  # not a URI: refused before any read
    (lambda root, tmp: "https://example.com/a.jpg", "invalid_input"),
])
def test_file_inputs_outside_the_root_are_refused(client, dirs, make_input, code):
    root, out = dirs
    tmp = root.parent
    (tmp / "secret.jpg").write_bytes(RED)
    os.symlink(tmp / "secret.jpg", root / "escape.jpg")
    os.symlink(tmp, root / "escape-dir")
    answer = client.post("/events/pubsub", json=push({"input": make_input(root, tmp)}, message_id="evil"))
    assert answer.status_code == 200  # acknowledged: redelivering it cannot help
    body = answer.get_json()
    assert body["status"] == "failed" and body["error"]["code"] == code, body
    assert body["record"] == os.path.join(str(out), "clip", "_failed", "evil.error.json")
    record = json.loads(storage.read_bytes(body["record"]))
    assert record["error"]["code"] == code
    # Nothing but the failure record was written: the secret was never embedded.
    assert storage.list_prefix(str(out)) == [body["record"]]


def test_a_symlink_inside_the_root_is_followed(client, dirs):
    root, out = dirs
    os.symlink(root / "photos" / "red.jpg", root / "alias.jpg")
    answer = client.post("/events/pubsub", json=push({"input": (root / "alias.jpg").as_uri()}))
    assert answer.get_json()["status"] == "succeeded"
    result_of(out, "photos/red.jpg")  # keyed by the real file: one result however it is named


def test_file_inputs_need_an_input_root(dirs):
    root, out = dirs
    _, client = make_app(events_output=str(out))
    body = client.post("/events/pubsub", json=push({"input": (root / "photos" / "red.jpg").as_uri()})).get_json()
    assert body["status"] == "failed" and body["error"]["code"] == "input_not_allowed"
    assert "EVENTS_INPUT_ROOT" in body["error"]["message"]


def test_job_output_must_stay_below_events_output(client, dirs, tmp_path):
    root, out = dirs
    job = {"input": (root / "photos" / "red.jpg").as_uri(), "output": str(tmp_path / "elsewhere")}
    body = client.post("/events/pubsub", json=push(job)).get_json()
    assert body["status"] == "failed" and body["error"]["code"] == "output_not_allowed"
    assert not (tmp_path / "elsewhere").exists()
    job["output"] = str(out / "team-a")
    body = client.post("/events/pubsub", json=push(job)).get_json()
    assert body["status"] == "succeeded" and body["results"][0].startswith(str(out / "team-a") + "/")


def test_objects_under_the_output_prefix_are_ignored(tmp_path):
    out = tmp_path / "out"
    storage.write_bytes(str(out / "photos" / "red.jpg@1.json"), b"{}")
    _, client = make_app(events_output=str(out), events_input_root=str(tmp_path))
    body = client.post("/events/pubsub", json=push({"input": (out / "photos" / "red.jpg@1.json").as_uri()})).get_json()
    assert body["status"] == "ignored" and "output prefix" in body["reason"]
    assert storage.list_prefix(str(out)) == [str(out / "photos" / "red.jpg@1.json")]


def test_permanent_failures_are_recorded_once_and_acknowledged(dirs):
    root, out = dirs
    (root / "photos" / "big.png").write_bytes(encode(photo_like(120, 120), "PNG"))  # ~40 KB
    _, client = make_app(events_output=str(out), events_input_root=str(root), events_max_object_mb=0.01)
    not_image = client.post("/events/pubsub", json=push({"input": (root / "notes.txt").as_uri()}))
    assert not_image.status_code == 200
    body = not_image.get_json()
    assert body["status"] == "failed" and body["error"]["code"] == "invalid_image"
    assert body["record"].endswith(f"notes.txt@{os.stat(root / 'notes.txt').st_mtime_ns}.error.json")
    record = json.loads(storage.read_bytes(body["record"]))
    assert record["input"] == (root / "notes.txt").as_uri() and record["status"] == "failed"
    again = client.post("/events/pubsub", json=push({"input": (root / "notes.txt").as_uri()})).get_json()
    assert again["status"] == "skipped" and again["reason"] == "failed_before"

    too_large = client.post("/events/pubsub", json=push({"input": (root / "photos" / "big.png").as_uri()}))
    assert too_large.status_code == 200 and too_large.get_json()["error"]["code"] == "object_too_large"

    missing = client.post("/events/pubsub", json=push({"input": (root / "photos" / "gone.jpg").as_uri()},
                                                        message_id="m-gone")).get_json()
    assert missing["status"] == "failed" and missing["error"]["code"] == "object_not_found"

    unknown = client.post("/events/pubsub", json=push({"input": (root / "photos" / "red.jpg").as_uri(),
                                                        "colour": "red"})).get_json()
    assert unknown["status"] == "failed" and unknown["error"]["code"] == "unknown_field"


@pytest.mark.parametrize("data", [b"\xff\xfe not json", b'"just a string"', b'{"no": "input"}', b""])
def test_poison_messages_are_acknowledged_with_a_record(client, dirs, data):
    _, out = dirs
    answer = client.post("/events/pubsub", json=push(data=data, message_id="poison-1"))
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "failed" and body["record"] == str(out / "clip" / "_failed" / "poison-1.error.json")
    assert json.loads(storage.read_bytes(body["record"]))["event_id"] == "poison-1"
    first = storage.read_bytes(body["record"])
    os.utime(body["record"], ns=(1, 1))
    again = client.post("/events/pubsub", json=push(data=data, message_id="poison-1"))
    assert again.status_code == 200 and again.get_json()["record"] == body["record"]
    # Create-only: a redelivery leaves the first record as it was.
    assert storage.read_bytes(body["record"]) == first and os.stat(body["record"]).st_mtime_ns == 1


def test_requests_that_are_not_events_get_400(client):
    for kwargs in ({"data": "x", "content_type": "text/plain"}, {"json": [1, 2]}, {"json": {"hello": 1}},
                   {"json": {"message": "text"}}):
        answer = client.post("/events/pubsub", **kwargs)
        assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "invalid_event", kwargs
    answer = client.post("/events/storage", json={"bucket": "b", "name": "x.jpg"})  # no ce-* headers
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "invalid_event"


def test_events_are_off_without_events_output():
    """A route this deployment does not offer: 404 events_not_configured (never 503 "retry later"),
    and /openapi.json leaves the event routes out, so no client is generated for them."""
    _, client = make_app()
    paths = client.get("/openapi.json").get_json()["paths"]
    assert not [path for path in paths if path.startswith("/events/")], sorted(paths)
    answers = [client.post("/events/pubsub", json=push({"input": "gs://b/x.jpg"})),
               client.post("/events/storage", headers=to_binary(finalized("b", "x.jpg", "1"))[0],
                           data=to_binary(finalized("b", "x.jpg", "1"))[1])]
    for answer in answers:
        error = answer.get_json()["error"]
        assert answer.status_code == 404 and error["code"] == "events_not_configured", error
        assert "EVENTS_OUTPUT" in error["message"] and "not ready" not in error["message"]


def test_other_notifications_and_event_types_are_ignored(client):
    deleted = client.post("/events/pubsub", json=push(attributes={
        "bucketId": "b", "objectId": "x.jpg", "eventType": "OBJECT_DELETE", "objectGeneration": "1"}))
    assert deleted.status_code == 200 and deleted.get_json()["status"] == "ignored"
    headers, body = to_binary(finalized("b", "x.jpg", "1", event_type="google.cloud.storage.object.v1.deleted"))
    archived = client.post("/events/storage", headers=headers, data=body)
    assert archived.status_code == 200 and archived.get_json()["status"] == "ignored"


# ---- transient failures: non-2xx so Pub/Sub redelivers ---------------------------------------------

class BlockingBackend(FakeClipBackend):
    """The fake model, held inside forward() once ``hold`` is set: a busy model for real."""

    hold = threading.Event()
    entered = threading.Event()
    release = threading.Event()

    def forward(self, kind, batch):
        if self.hold.is_set() and kind == "image":
            self.hold.clear()
            self.entered.set()
            self.release.wait(10)
        return super().forward(kind, batch)


def test_a_busy_model_answers_429_and_the_redelivery_succeeds(dirs):
    root, out = dirs
    for flag in (BlockingBackend.hold, BlockingBackend.entered, BlockingBackend.release):
        flag.clear()
    app, client = make_app(BlockingBackend, events_output=str(out), events_input_root=str(root),
                           max_batch_size=1, max_queue=1, max_wait_ms=0, max_inputs=1, max_labels=1)
    BlockingBackend.hold.set()
    job = push({"input": (root / "photos" / "red.jpg").as_uri()})
    first = threading.Thread(target=lambda: app.test_client().post("/events/pubsub", json=job))
    first.start()
    assert BlockingBackend.entered.wait(10)  # the model holds the first event's image
    queued = threading.Thread(target=lambda: app.test_client().post("/embed", data={"text": "fills the queue"}))
    queued.start()
    wait_until(lambda: app.extensions["model_runner"].batcher.queue_depth() == 1, 10)
    busy = client.post("/events/pubsub", json=push({"input": (root / "photos" / "blue.png").as_uri()}))
    assert busy.status_code == 429 and busy.headers.get("Retry-After")
    assert not [p for p in storage.list_prefix(str(out)) if "blue.png" in p]  # no failure record: retry
    BlockingBackend.release.set()
    first.join(10)
    queued.join(10)
    retried = client.post("/events/pubsub", json=push({"input": (root / "photos" / "blue.png").as_uri()}))
    assert retried.status_code == 200 and retried.get_json()["status"] == "succeeded"


def test_storage_5xx_answers_503_without_a_failure_record(dirs, monkeypatch):
    root, out = dirs
    calls: list[str] = []

    class Unavailable(BaseHTTPRequestHandler):
        """Plays Cloud Storage having an outage (the emulator cannot be told to fail)."""

        def do_GET(self):  # noqa: N802
            calls.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setattr(storage, "RETRY_TIMEOUT_S", 0.5)
        _, client = make_app(events_output=str(out))
        answer = client.post("/events/pubsub", json=push(attributes={
            "bucketId": "uploads", "objectId": "red.jpg", "eventType": "OBJECT_FINALIZE", "objectGeneration": "7"}))
    finally:
        server.shutdown()
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "storage_unavailable"
    assert calls  # it really asked storage
    assert storage.list_prefix(str(out)) == []


def test_pubsub_push_with_an_oidc_header_passes_the_api_key_as_token(dirs):
    root, out = dirs
    _, client = make_app(events_output=str(out), events_input_root=str(root), api_key="s3cret")
    job = push({"input": (root / "photos" / "red.jpg").as_uri()})
    oidc = {"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2ln"}  # what a push carries
    assert client.post("/events/pubsub", json=job, headers=oidc).status_code == 401
    assert client.post("/events/pubsub?token=wrong", json=job, headers=oidc).status_code == 401
    answer = client.post("/events/pubsub?token=s3cret", json=job, headers=oidc)
    assert answer.status_code == 200 and answer.get_json()["status"] == "succeeded"
    # Only the event routes read ?token=: everywhere else the key stays in a header.
    assert client.post("/embed?token=s3cret", data={"text": "hi"}).status_code == 401
    assert client.post("/events/pubsub", json=job, headers={"X-API-Key": "s3cret"}).status_code == 200


def test_bare_jobs_that_fail_get_records_of_their_own(client, dirs):
    _, out = dirs
    records = {client.post("/events/pubsub", json={"input": 5}).get_json()["record"] for _ in range(2)}
    assert len(records) == 2 and all(r.startswith(str(out / "clip" / "_failed" / "job-")) for r in records)


def test_events_output_needs_a_bucket():
    from core.settings import SettingsError

    with pytest.raises(SettingsError, match="EVENTS_OUTPUT"):
        ServerSettings.from_env({"EVENTS_OUTPUT": "gs://"})
    assert ServerSettings.from_env({"EVENTS_OUTPUT": "gs://b"}).events_output == "gs://b"



def test_object_names_cannot_climb_out_of_a_local_output(client, dirs):
    _, out = dirs
    for n, name in enumerate(("../../escape.jpg", "a/../../../escape.jpg", "../../../../escape.jpg")):
        body = client.post("/events/pubsub", json=push(attributes={
            "bucketId": "uploads", "objectId": name, "eventType": "OBJECT_FINALIZE", "objectGeneration": "3"},
            message_id=f"climb-{n}")).get_json()
        assert body["status"] == "failed" and body["error"]["code"] == "invalid_input", body
        assert body["record"] == str(out / "clip" / "_failed" / f"climb-{n}.error.json")
    assert not [p for p in (out.parent, out.parent.parent, out.parent.parent.parent) if list(p.glob("escape*"))]


def test_eventarc_pubsub_cloudevent_carries_the_push_envelope(client, dirs):
    root, out = dirs
    envelope = push({"input": (root / "photos" / "red.jpg").as_uri()}, message_id="via-eventarc")
    event = CloudEvent({"type": "google.cloud.pubsub.topic.v1.messagePublished", "id": "via-eventarc",
                        "source": "//pubsub.googleapis.com/projects/p/topics/clip-jobs"}, envelope)
    headers, body = to_binary(event)
    headers["Content-Type"] = "application/json"
    answer = client.post("/events/storage", headers=headers, data=body)
    assert answer.status_code == 200 and answer.get_json()["status"] == "succeeded", answer.get_json()
    result_of(out, "photos/red.jpg")
