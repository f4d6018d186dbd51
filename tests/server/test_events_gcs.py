"""CLIP /events/storage and storage notifications in-process (fake backend) on the real storage emulator."""

from __future__ import annotations

import json

import pytest
from cloudevents.v1.conversion import to_binary, to_structured

from core.from_storage import storage
from tests.server.test_events import RED, finalized, make_app, push

pytestmark = pytest.mark.integration


@pytest.fixture
def gcs_client(bucket):
    """An app reading gs://<bucket>/uploads and writing gs://<bucket>/results."""
    return make_app(events_output=f"gs://{bucket}/results")[1]


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_eventarc_cloudevents_in_both_modes(gcs_client, bucket, mode):
    storage.write_bytes(f"gs://{bucket}/uploads/red.jpg", RED, "image/jpeg")
    generation = storage.stat(f"gs://{bucket}/uploads/red.jpg").generation
    headers, body = (to_binary if mode == "binary" else to_structured)(finalized(bucket, "uploads/red.jpg", generation))
    if mode == "binary":
        assert headers["ce-type"] and "content-type" not in {k.lower() for k in headers}
        headers["Content-Type"] = "application/json"  # what Eventarc sends in binary mode
    else:
        assert headers["content-type"] == "application/cloudevents+json"
    answer = gcs_client.post("/events/storage", headers=headers, data=body)
    assert answer.status_code == 200, answer.get_json()
    expected = f"gs://{bucket}/results/clip/{bucket}/uploads/red.jpg@{generation}.json"
    assert answer.get_json()["results"] == [expected]
    result = json.loads(storage.read_bytes(expected))
    assert result["input"] == f"gs://{bucket}/uploads/red.jpg" and result["generation"] == generation
    assert len(result["embedding"]) == 64
    # The result object's own finalize event is ignored: no loop.
    loop = gcs_client.post("/events/storage", headers=headers,
                           data=body.replace(b"uploads/red.jpg", f"results/{bucket}/uploads/red.jpg@{generation}.json"
                                             .encode())) if mode == "structured" else None
    if loop is not None:
        assert loop.get_json()["status"] == "ignored"


def test_storage_notification_for_a_missing_object_is_recorded(gcs_client, bucket):
    body = gcs_client.post("/events/pubsub", json=push(attributes={
        "bucketId": bucket, "objectId": "uploads/gone.jpg", "eventType": "OBJECT_FINALIZE",
        "objectGeneration": "42", "payloadFormat": "JSON_API_V1"})).get_json()
    assert body["status"] == "failed" and body["error"]["code"] == "object_not_found"
    assert body["record"] == f"gs://{bucket}/results/clip/{bucket}/uploads/gone.jpg@42.error.json"
    assert storage.exists(body["record"])


