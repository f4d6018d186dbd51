"""End to end: storage emulator -> Pub/Sub emulator push -> both services (real gunicorn) -> result objects.

Real parts only: ``gcp-storage-emulator`` holds the buckets, the gcloud Pub/Sub emulator delivers
push requests to the services on loopback, the CLIP server runs the fake model (``CLIP_MODEL=fake``)
and the worker the embedded tiny.en. Plus Eventarc-shaped CloudEvents POSTed in both modes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import pytest
import requests
from cloudevents.v1.conversion import to_binary, to_structured
from cloudevents.v1.http import CloudEvent
from PIL import Image

from core.from_storage import storage
from tests.conftest import ROOT, run_service, wait_until
from tests.media import encode, speak
from tests.readme_examples import code_blocks, section

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENTENCE = "The quick brown fox jumps over the lazy dog."


def answered(service, event_id: str) -> list[str]:
    """Statuses of the acknowledged deliveries of one event (transient 'retry' answers left out)."""
    return [e["status"] for e in event_lines(service, event_id) if e["status"] != "retry"]


def event_lines(service, event_id: str) -> list[dict]:
    """The service's structured log lines about one event (one per delivery it answered)."""
    lines = []
    for raw in service.logs().splitlines():
        if raw.startswith("{") and '"event"' in raw:
            entry = json.loads(raw)
            if isinstance(entry.get("event"), dict) and entry["event"].get("event_id") == event_id:
                lines.append(entry["event"])
    return lines


@contextmanager
def started_together(*managers):
    """Enter several context managers on threads at once (service start-ups overlap); exit them all."""
    with ExitStack() as stack, ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
        errors = []
        for manager, future in zip(managers, futures):
            try:
                future.result()
                stack.push(manager.__exit__)
            except Exception as err:  # noqa: BLE001 - re-raised below once the others are registered
                errors.append(err)
        if errors:
            raise errors[0]
        yield [future.result() for future in futures]


@pytest.fixture(scope="module")
def world(storage_emulator, request, tmp_path_factory):
    """A bucket, both services writing to gs://uploads/results, and one push subscription per service."""
    # The configuration "Try it locally" (docs/events-and-batch-jobs.md) shows: bucket uploads, results in gs://uploads/results.
    uploads = "uploads"
    storage.gcs_client().create_bucket(uploads)
    output = f"gs://{uploads}/results"
    workdir = tmp_path_factory.mktemp("events-workdir")  # EVENTS_INPUT_ROOT, where the example runs
    env = {"EVENTS_OUTPUT": output, "EVENTS_INPUT_ROOT": str(workdir), "STORAGE_EMULATOR_HOST": storage_emulator.url,
           "LOG_LEVEL": "INFO"}
    tmp = tmp_path_factory.mktemp("events-e2e")
    with started_together(run_service("server", {**env, "CLIP_MODEL": "fake"}, tmp),
                          run_service("worker", {**env, "WHISPER_MODEL": "tiny.en", "MAX_WAIT_MS": "20",
                                                 "MAX_BATCH_SIZE": "2"}, tmp,  # a short warm-up batch
                                      ready_timeout_s=180)) as (clip, worker):
        # The Pub/Sub emulator starts (on this thread) while the services load their models.
        pubsub = request.getfixturevalue("pubsub_emulator")
        # As deployed: one notification topic per service (bucket notifications filtered by prefix).
        for topic, service in (("images", clip), ("audio", worker)):
            pubsub.create_topic(topic)
            pubsub.create_push_subscription(f"{topic}-push", topic, f"{service.url}/events/pubsub")
        yield {"uploads": uploads, "output": output, "clip": clip, "worker": worker, "pubsub": pubsub,
               "tmp": tmp, "workdir": workdir, "storage_url": storage_emulator.url}


def upload(bucket: str, name: str, data: bytes, content_type: str) -> str:
    """Upload an object; returns its generation."""
    uri = f"gs://{bucket}/{name}"
    storage.write_bytes(uri, data, content_type)
    return storage.stat(uri).generation


def notify(world, topic: str, name: str, generation: str, content_type: str) -> str:
    """Publish the Cloud Storage notification GCS would send for a finalized object."""
    bucket = world["uploads"]
    resource = {"kind": "storage#object", "bucket": bucket, "name": name, "generation": generation,
                "contentType": content_type}
    return world["pubsub"].publish(topic, json.dumps(resource).encode(), {
        "bucketId": bucket, "objectId": name, "eventType": "OBJECT_FINALIZE", "objectGeneration": generation,
        "payloadFormat": "JSON_API_V1", "notificationConfig": f"projects/_/buckets/{bucket}/notificationConfigs/1"})


def result_uri(world, name: str, generation: str, extension: str, service: str) -> str:
    """Where ``service`` ("clip" or "whisper") writes the result for one object generation."""
    return f"{world['output']}/{service}/{world['uploads']}/{name}@{generation}.{extension}"


def test_uploads_flow_through_pubsub_to_results_once(world):
    image_gen = upload(world["uploads"], "photos/red.jpg", encode(Image.new("RGB", (64, 48), (220, 20, 20))),
                       "image/jpeg")
    wav = speak(SENTENCE, world["tmp"] / "fox.wav")
    audio_gen = upload(world["uploads"], "audio/fox.wav", wav.read_bytes(), "audio/wav")
    image_message = notify(world, "images", "photos/red.jpg", image_gen, "image/jpeg")
    audio_message = notify(world, "audio", "audio/fox.wav", audio_gen, "audio/wav")

    embedding = result_uri(world, "photos/red.jpg", image_gen, "json", "clip")
    transcript = {ext: result_uri(world, "audio/fox.wav", audio_gen, ext, "whisper") for ext in ("json", "srt", "vtt")}
    wait_until(lambda: storage.exists(embedding) and storage.exists(transcript["json"]), timeout_s=120, interval_s=0.2)
    result = json.loads(storage.read_bytes(embedding))
    assert result["input"] == f"gs://{world['uploads']}/photos/red.jpg" and len(result["embedding"]) == 64
    words = json.loads(storage.read_bytes(transcript["json"]))
    assert "lazy dog" in words["text"].lower() and words["segments"], words
    assert b"-->" in storage.read_bytes(transcript["srt"])
    assert storage.read_bytes(transcript["vtt"]).startswith(b"WEBVTT")
    # The log line comes from the log thread, maybe just after the result was stored.
    wait_until(lambda: answered(world["clip"], image_message) and answered(world["worker"], audio_message), 10)
    assert answered(world["clip"], image_message) == ["succeeded"]
    assert answered(world["worker"], audio_message) == ["succeeded"]

    # The same notification again (Pub/Sub delivers at least once): answered, not recomputed.
    before = {uri: storage.stat(uri).generation for uri in (embedding, *transcript.values())}
    again_image = notify(world, "images", "photos/red.jpg", image_gen, "image/jpeg")
    again_audio = notify(world, "audio", "audio/fox.wav", audio_gen, "audio/wav")
    wait_until(lambda: answered(world["clip"], again_image) and answered(world["worker"], again_audio), 60)
    assert answered(world["clip"], again_image) == ["skipped"]
    assert answered(world["worker"], again_audio) == ["skipped"]
    assert {uri: storage.stat(uri).generation for uri in before} == before  # no object rewritten


def test_poison_messages_are_acknowledged_once_with_a_failure_record(world):
    text_gen = upload(world["uploads"], "photos/notes.txt", b"this is not an image", "text/plain")
    not_image = notify(world, "images", "photos/notes.txt", text_gen, "text/plain")
    not_audio = notify(world, "audio", "photos/notes.txt", text_gen, "text/plain")
    garbage = world["pubsub"].publish("audio", b"\x00garbage, not JSON")
    records = [result_uri(world, "photos/notes.txt", text_gen, "error.json", "clip"),
               result_uri(world, "photos/notes.txt", text_gen, "error.json", "whisper"),
               f"{world['output']}/whisper/_failed/{garbage}.error.json"]
    wait_until(lambda: all(storage.exists(uri) for uri in records), timeout_s=60, interval_s=0.2)
    # Each service keeps its own record: one's failure never reads as the other's result.
    assert json.loads(storage.read_bytes(records[0]))["error"]["code"] == "invalid_image"
    assert json.loads(storage.read_bytes(records[1]))["error"]["code"] == "invalid_audio"
    assert json.loads(storage.read_bytes(records[2]))["event_id"] == garbage
    wait_until(lambda: answered(world["clip"], not_image) and answered(world["worker"], not_audio), 60)
    # The emulator redelivers a non-2xx push within about a second; silence for 3 s means acknowledged.
    # Every line counts here, retries too: a poison message must be answered exactly once.
    time.sleep(3)
    assert [e["status"] for e in event_lines(world["clip"], not_image)] == ["failed"]
    assert [e["status"] for e in event_lines(world["worker"], garbage)] == ["failed"]
    assert [e["status"] for e in event_lines(world["worker"], not_audio)] == ["failed"]


def test_worker_job_options_are_validated_before_the_model_runs(world):
    (world["workdir"] / "short.wav").write_bytes(speak(SENTENCE, world["tmp"] / "short.wav").read_bytes())
    answer = requests.post(f"{world['worker'].url}/events/pubsub", timeout=60, json={
        "input": (world["workdir"] / "short.wav").as_uri(), "beam_size": 99})
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "failed" and body["error"]["code"] == "invalid_option", body
    assert json.loads(storage.read_bytes(body["record"]))["input"].endswith("/short.wav")


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_eventarc_cloudevents_reach_the_worker(world, mode):
    name = f"audio/eventarc-{mode}.wav"
    wav = speak(SENTENCE, world["tmp"] / f"eventarc-{mode}.wav")
    generation = upload(world["uploads"], name, wav.read_bytes(), "audio/wav")
    bucket = world["uploads"]
    event = CloudEvent({"type": "google.cloud.storage.object.v1.finalized",
                        "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
                        "subject": f"objects/{name}", "id": f"{uuid.uuid4().int % 10**16}",
                        "time": "2026-01-01T00:00:00.000000Z"},
                       {"kind": "storage#object", "bucket": bucket, "name": name, "generation": generation,
                        "contentType": "audio/wav", "size": str(wav.stat().st_size)})
    headers, body = (to_binary if mode == "binary" else to_structured)(event)
    if mode == "binary":
        headers["Content-Type"] = "application/json"  # Eventarc's binary mode
    answer = requests.post(f"{world['worker'].url}/events/storage", headers=headers, data=body, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded"
    assert sorted(answer.json()["results"]) == sorted(result_uri(world, name, generation, ext, "whisper")
                                                      for ext in ("json", "srt", "vtt"))
    result = result_uri(world, name, generation, "json", "whisper")
    assert "lazy dog" in json.loads(storage.read_bytes(result))["text"].lower()


def events_section() -> list[str]:
    """The sh blocks of the Events section (docs/events-and-batch-jobs.md), in order."""
    return code_blocks(section("events-and-batch-jobs", "Events"), "sh")


def test_readme_events_examples_work_as_printed(world):
    start, examples = events_section()[:2]
    # The services here run as the page starts them (CLIP with the fake model: same path, no weights).
    for fragment in ("--default-bucket uploads", "EVENTS_OUTPUT=gs://uploads/results", "EVENTS_INPUT_ROOT=$PWD"):
        assert fragment in start
    workdir = world["workdir"]
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_samples.py"), str(workdir)], check=True,
                   capture_output=True)
    script = examples.replace("http://localhost:9023", world["storage_url"])
    script = script.replace("http://localhost:5001", world["clip"].url).replace("http://localhost:8080",
                                                                                 world["worker"].url)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    answers = [json.loads(line) for line in lines if line.startswith('{"status"')]
    assert [a["status"] for a in answers] == ["succeeded", "skipped", "succeeded", "succeeded"], lines
    assert all("error" not in a for a in answers)
    assert answers[0]["results"][0].startswith("gs://uploads/results/clip/uploads/inbox/photo.jpg@")
    assert '"embedding"' in next(line for line in lines if line.startswith('{"input"'))
    assert sorted(r.rsplit(".", 1)[1] for r in answers[2]["results"]) == ["json", "srt", "vtt"]
    assert "quarterly report" in json.loads(storage.read_bytes(answers[3]["results"][-1]))["text"].lower()
