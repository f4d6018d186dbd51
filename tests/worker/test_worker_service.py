"""The worker's front door: 503 while loading (never 500), the fake model over HTTP, option bounds."""

from __future__ import annotations

import io
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from core.errors import PayloadTooLarge
from tests.conftest import wait_until
from tests.media import wav_bytes
from worker.app import create_app
from worker.backends.fake import FakeWhisperBackend
from worker.backends.whisper_backend import WhisperBackend
from worker.options import parse_options
from worker.settings import WorkerSettings


def transcribe(service, path, **options):
    with open(path, "rb") as audio:
        return requests.post(service.url + "/transcribe", files={"audio": (path.name, audio)}, data=options,
                             timeout=60)


class StillLoading(WhisperBackend):
    """The real tiny.en backend, held in load() until the test ends (then it gives up)."""

    gate = threading.Event()

    def load(self):
        self.gate.wait(30)
        raise RuntimeError("test over")


@pytest.mark.unit
def test_transcribe_while_the_model_loads_is_503_with_retry_after_not_500():
    settings = WorkerSettings.from_env({}, whisper_model="tiny.en", log_level="WARNING")
    app = create_app(settings, backend=StillLoading(settings))
    client = app.test_client()
    try:
        response = client.post("/transcribe", data={"audio": (io.BytesIO(wav_bytes(2)), "a.wav")},
                               content_type="multipart/form-data")
        assert response.status_code == 503, response.json
        assert response.json["error"]["code"] == "not_ready" and int(response.headers["Retry-After"]) >= 1
        # The model's facts are known before it loads: English-only options are checked already.
        refused = client.post("/transcribe", data={"audio": (io.BytesIO(wav_bytes(2)), "a.wav"), "language": "de"},
                              content_type="multipart/form-data")
        assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_option"
    finally:
        StillLoading.gate.set()
        app.extensions["model_runner"].batcher.stop()


@pytest.mark.unit
def test_facts_are_declared_before_load():
    settings = WorkerSettings.from_env({}, whisper_model="tiny.en")
    backend = WhisperBackend(settings)
    assert backend.name == "tiny.en" and backend.multilingual is False and backend.model is None
    assert FakeWhisperBackend().multilingual is False


@pytest.mark.unit
def test_temperature_lists_are_bounded_and_deduplicated():
    def temperatures(raw):
        return parse_options({"temperature": [raw]}, multilingual=False, model_name="m",
                             default_beam_size=5).temperatures

    assert temperatures("0,0.5,0,0.5") == (0.0, 0.5)
    assert temperatures("0,0.2,0.4,0.6,0.8,1") == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    with pytest.raises(Exception, match="at most 6"):
        temperatures("0,0.1,0.2,0.3,0.4,0.5,0.6")


@pytest.mark.integration
def test_the_fake_model_transcribes_deterministically_over_http(fake_whisper_service):
    def transcribe(data, **options):
        return requests.post(fake_whisper_service.url + "/transcribe", files={"audio": ("a.wav", data)},
                             data=options, timeout=30)

    audio = wav_bytes(65)
    first, again = transcribe(audio, response_format="verbose_json"), transcribe(audio)
    assert first.status_code == 200 and again.status_code == 200
    body = first.json()
    assert body["text"] == again.json()["text"] and len(body["segments"]) == 3 and body["duration"] == 65.0
    assert transcribe(wav_bytes(65, pitch=0.07)).json()["text"] != body["text"]  # other audio, other text
    silence = transcribe(b"RIFF" + wav_bytes(3, pitch=0.0)[4:]).json()
    assert silence["text"] == ""
    health = requests.get(fake_whisper_service.url + "/health", timeout=5).json()
    assert health["status"] == "ok" and health["model"] == "fake"


@pytest.mark.integration
def test_concurrent_requests_share_batches_on_the_fake_model(fake_whisper_service):
    url = fake_whisper_service.url
    before = requests.get(url + "/health", timeout=5).json()["stats"]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda n: requests.post(url + "/transcribe", timeout=30,
                                                          files={"audio": ("a.wav", wav_bytes(2, 0.03 + n / 100))}),
                                  range(8)))
    assert all(r.status_code == 200 for r in responses)
    wait_until(lambda: requests.get(url + "/health", timeout=5).json()["stats"]["items"] - before["items"] >= 8, 5)
    after = requests.get(url + "/health", timeout=5).json()["stats"]
    assert after["batches"] - before["batches"] < 8


SRT_CUE = re.compile(r"^\d+\n\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}\n[^\n]+\n$")
VTT_CUE = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}\n[^\n]+\n$")


@pytest.mark.integration
def test_srt_and_vtt_are_valid_subtitles(fake_whisper_service, tmp_path):
    long = tmp_path / "long.wav"
    long.write_bytes(wav_bytes(150))  # five 30 s chunks: five cues on the fake model
    srt = transcribe(fake_whisper_service, long, response_format="srt")
    assert srt.headers["Content-Type"].startswith("application/x-subrip")
    cues = srt.text.strip("\n").split("\n\n")
    assert len(cues) >= 4
    for n, cue in enumerate(cues, start=1):
        assert SRT_CUE.match(cue + "\n"), cue
        assert cue.startswith(f"{n}\n")
    vtt = transcribe(fake_whisper_service, long, response_format="vtt")
    assert vtt.headers["Content-Type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n\n")
    for cue in vtt.text[len("WEBVTT\n\n"):].strip("\n").split("\n\n"):
        assert VTT_CUE.match(cue + "\n"), cue


@pytest.mark.integration
def test_cross_request_batch_sizes_appear_in_the_request_logs(fake_whisper_service, tmp_path):
    clips = []
    for n in range(4):
        clips.append(tmp_path / f"clip{n}.wav")
        clips[-1].write_bytes(wav_bytes(2, 0.03 + n / 100))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda path: transcribe(fake_whisper_service, path), clips))

    def logged_batch_sizes():  # request lines are written by the log thread, maybe after the response
        return [size for line in fake_whisper_service.logs().splitlines() if line.startswith("{")
                for size in json.loads(line).get("batch_sizes", [])]

    assert wait_until(lambda: max(logged_batch_sizes(), default=0) >= 2, 10)


@pytest.mark.unit
def test_decoded_audio_is_charged_to_the_memory_budget_before_decoding():
    """1 MiB of decode budget: 2 s of audio (64 KB of PCM) fits, 60 s (1.9 MB) is refused with 413."""
    settings = WorkerSettings.from_env({}, whisper_model="fake", decode_memory_budget_mb=1.0, log_level="WARNING")
    app = create_app(settings, backend=FakeWhisperBackend(settings))
    wait_until(lambda: app.extensions["model_runner"].health()[0], timeout_s=60)
    client = app.test_client()
    too_long = client.post("/transcribe", data={"audio": (io.BytesIO(wav_bytes(60)), "long.wav")})
    assert too_long.status_code == 413 and too_long.get_json()["error"]["code"] == "input_too_large_to_decode"
    short = client.post("/transcribe", data={"audio": (io.BytesIO(wav_bytes(2)), "short.wav")})
    assert short.status_code == 200 and app.extensions["memory_budget"].snapshot()["in_use_mb"] == 0
    # The check before a callback_url job's 202 decodes within the same budget.
    service = app.extensions["service"]
    with pytest.raises(PayloadTooLarge):
        service.check_audio(wav_bytes(60))
    service.check_audio(wav_bytes(2))
