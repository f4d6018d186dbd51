"""Every door counts its inputs: images, texts and audio seconds move by exactly what was processed,
labelled http, callback, event or job (fake backends, in process)."""

from __future__ import annotations

import io
import json

import pytest

from core.request_context import DOORS
from tests.conftest import wait_until
from tests.media import wav_bytes

pytestmark = pytest.mark.unit


def counts(name: str) -> dict[str, float]:
    """``name``'s value per door, from this process's registry."""
    from prometheus_client import REGISTRY

    return {door: REGISTRY.get_sample_value(name, {"door": door}) or 0.0 for door in DOORS}


def moved(before: dict[str, float], name: str) -> dict[str, float]:
    """By how much ``name`` moved per door since ``before`` (only the doors that moved)."""
    after = counts(name)
    return {door: round(after[door] - before[door], 3) for door in DOORS if after[door] != before[door]}


def clip_app(**overrides):
    from server.app import create_app
    from server.settings import ServerSettings

    settings = ServerSettings.from_env({}, clip_model="fake", log_level="WARNING", **overrides)
    client = create_app(settings).test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 10)
    return client


def test_each_service_shows_its_declared_units_with_every_door_from_the_start():
    from worker.app import create_app as create_worker
    from worker.settings import WorkerSettings

    units = {"images_processed_total", "texts_processed_total", "audio_seconds_processed_total"}
    clip = clip_app().get("/metrics").get_data(as_text=True)
    whisper = create_worker(WorkerSettings.from_env({}, whisper_model="fake", log_level="WARNING")).test_client()
    whisper = whisper.get("/metrics").get_data(as_text=True)
    for text, declared in ((clip, {"images_processed_total", "texts_processed_total"}),
                           (whisper, {"audio_seconds_processed_total"})):
        for name in units:
            for door in DOORS:
                assert (f'{name}{{door="{door}"}}' in text) == (name in declared), (name, door)
    assert "transcription_real_time_factor" in whisper and "transcription_real_time_factor" not in clip


def test_http_door_counts_images_and_texts():
    from tests.media import encode, photo_like

    client = clip_app()
    images, texts = counts("images_processed_total"), counts("texts_processed_total")
    image = encode(photo_like(40, 30))
    answer = client.post("/embed", data={"image": [(io.BytesIO(image), "a.jpg"), (io.BytesIO(image), "b.jpg")],
                                         "text": ["a", "b", "c"]})
    assert answer.status_code == 200
    assert moved(images, "images_processed_total") == {"http": 2}
    assert moved(texts, "texts_processed_total") == {"http": 3}
    classified = client.post("/classify", data={"image": (io.BytesIO(image), "a.jpg"), "labels": ["x", "y"]})
    assert classified.status_code == 200
    assert moved(images, "images_processed_total") == {"http": 3}  # the labels are not texts sent
    assert moved(texts, "texts_processed_total") == {"http": 3}
    refused = client.post("/embed", data={"image": (io.BytesIO(b"not an image"), "c.jpg")})
    assert refused.status_code == 400 and moved(images, "images_processed_total") == {"http": 3}


def test_callback_door_counts_in_the_jobs_thread(receiver):
    from tests.callback_receiver import SECRET

    client = clip_app(callback_secret=SECRET, callback_backoff_s=0.01, callback_allowed_hosts=(receiver.host,))
    texts = counts("texts_processed_total")
    accepted = client.post("/embed", data={"text": ["a", "b", "c", "d"], "callback_url": receiver.url()})
    assert accepted.status_code == 202
    (got,) = receiver.wait_for(1)
    assert json.loads(got.body)["status"] == "succeeded"
    assert moved(texts, "texts_processed_total") == {"callback": 4}


def test_event_door_counts_the_event_image_once(tmp_path):
    from tests.media import encode, photo_like

    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    (root / "red.jpg").write_bytes(encode(photo_like(40, 30)))
    client = clip_app(events_output=str(out), events_input_root=str(root))
    images = counts("images_processed_total")
    answer = client.post("/events/pubsub", json={"input": (root / "red.jpg").as_uri()})
    assert answer.status_code == 200 and answer.get_json()["status"] == "succeeded", answer.get_json()
    assert moved(images, "images_processed_total") == {"event": 1}


def test_job_door_counts_in_process_and_in_the_summary_line(tmp_path, monkeypatch, capsys):
    from core.from_storage import job_entry
    from server.app import CLIP
    from tests.media import encode, photo_like

    source = tmp_path / "in"
    source.mkdir()
    for n in range(3):
        (source / f"{n}.jpg").write_bytes(encode(photo_like(40 + n, 30)))
    monkeypatch.setenv("CLIP_MODEL", "fake")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    images = counts("images_processed_total")
    assert job_entry.main(CLIP, "embed", ["--input", str(source), "--output", str(tmp_path / "out")]) == 0
    assert moved(images, "images_processed_total") == {"job": 3}
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    (summary,) = [line for line in lines if line.get("message") == "job finished"]
    assert summary["inputs"] == {"images": 3, "texts": 0}


def test_audio_seconds_are_counted_at_the_http_door_with_their_real_time_factor():
    from prometheus_client import REGISTRY

    from worker.app import create_app
    from worker.settings import WorkerSettings

    client = create_app(WorkerSettings.from_env({}, whisper_model="fake", log_level="WARNING")).test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 10)
    seconds = counts("audio_seconds_processed_total")
    factors = REGISTRY.get_sample_value("transcription_real_time_factor_count") or 0.0
    answer = client.post("/transcribe", data={"audio": (io.BytesIO(wav_bytes(2.5)), "a.wav")})
    assert answer.status_code == 200, answer.get_json()
    assert moved(seconds, "audio_seconds_processed_total") == {"http": 2.5}
    assert REGISTRY.get_sample_value("transcription_real_time_factor_count") == factors + 1
