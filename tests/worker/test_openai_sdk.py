"""The official ``openai`` Python SDK, unchanged, against the Whisper worker (gunicorn, tiny.en)."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from openai import OpenAI

from tests.conftest import wait_until
from tests.worker.conftest import KEY_WORDS, assert_heard
from worker.app import create_app
from worker.backends.whisper_backend import WhisperBackend
from worker.formats import Segment, Transcript
from worker.settings import WorkerSettings

pytestmark = pytest.mark.integration


def sdk(url: str) -> OpenAI:
    """The SDK pointed at the worker; no retries, so each test sees the first answer."""
    return OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def recording(speech) -> bytes:
    return speech.sentences[1].read_bytes()  # "Please send the quarterly report to Maria before Friday."


def transcribe(url: str, recording: bytes, **options):
    return sdk(url).audio.transcriptions.create(file=("report.wav", recording), model="whisper-1", **options)


# json is left to the SDK's default; the others are asked for.
FORMATS = {"json": {}, "verbose_json": {"response_format": "verbose_json", "timestamp_granularities": ["word"]},
           "text": {"response_format": "text"}, "srt": {"response_format": "srt"}, "vtt": {"response_format": "vtt"}}


def test_every_response_format(whisper_service, recording):
    # All five at once: the worker batches concurrent requests, so this costs about one transcription.
    with ThreadPoolExecutor(len(FORMATS)) as pool:
        futures = {fmt: pool.submit(transcribe, whisper_service.url, recording, **extra)
                   for fmt, extra in FORMATS.items()}
        results = {fmt: future.result() for fmt, future in futures.items()}
    assert type(results["json"]).__name__ == "Transcription"
    assert_heard(results["json"].text, KEY_WORDS[1])
    verbose = results["verbose_json"]
    assert type(verbose).__name__ == "TranscriptionVerbose" and verbose.text == results["json"].text
    assert verbose.language == "en" and 2.0 < verbose.duration < 6.0
    assert verbose.segments and verbose.segments[0].end > verbose.segments[0].start
    assert verbose.segments[0].model_extra["words"]  # word times asked for the OpenAI way
    assert results["text"] == results["json"].text + "\n"
    for fmt, starts in (("srt", "1\n00:00:0"), ("vtt", "WEBVTT\n\n00:00:0")):
        assert isinstance(results[fmt], str) and results[fmt].startswith(starts) and " --> " in results[fmt]
        assert_heard(results[fmt], KEY_WORDS[1])


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations deprecated
def test_translation_on_an_english_only_model_is_the_sdks_bad_request_error(whisper_service, recording):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(whisper_service.url).audio.translations.create(file=("report.wav", recording), model="whisper-1")
    assert caught.value.code == "invalid_option"
    assert "tiny.en is English-only and cannot translate" in caught.value.message


def test_bad_audio_is_400_and_too_long_is_413(whisper_service, speech):
    with pytest.raises(openai.BadRequestError) as caught:
        transcribe(whisper_service.url, b"this is not audio at all" * 10)
    assert caught.value.code == "invalid_audio"
    with pytest.raises(openai.APIStatusError) as caught:  # the SDK has no class of its own for 413
        transcribe(whisper_service.url, speech.over_limit.read_bytes())  # 11 minutes; MAX_AUDIO_SECONDS=600
    assert caught.value.status_code == 413 and caught.value.code == "audio_too_long"


def test_models_lists_the_served_model(whisper_service):
    assert [model.id for model in sdk(whisper_service.url).models.list().data] == ["tiny.en"]


class MultilingualStub(WhisperBackend):
    """Says it is multilingual and loads nothing (the model's work is stubbed in the test)."""

    def load(self) -> None:
        self.multilingual = True

    def warmup_batches(self, batch_size: int) -> list:
        return []


class NeverLoads(WhisperBackend):
    """Stays loading for ever (a daemon thread), like a large model still on its way to the GPU."""

    def load(self) -> None:
        threading.Event().wait()


def test_translation_on_a_multilingual_model_asks_the_service_for_task_translate(monkeypatch):
    """No multilingual model is on this machine (tiny.en is the only one shipped), so the model is
    stubbed here: the test checks the route's part, that it asks WhisperService for a translation."""
    settings = WorkerSettings.from_env({}, whisper_model="tiny.en", log_level="ERROR")
    app = create_app(settings, backend=MultilingualStub(settings))
    wait_until(lambda: app.test_client().get("/health").status_code == 200, 30)
    service = app.extensions["service"]
    asked = []

    def fake_transcribe(data, options):
        asked.append(options)
        return Transcript("de", 0.99, 2.0, [Segment(0, 0.0, 2.0, " Good morning.", -0.1, 0.01, 1.0, 0.0)],
                          task=options.task)

    monkeypatch.setattr(service, "transcribe", fake_transcribe)
    response = app.test_client().post("/v1/audio/translations", data={
        "file": (io.BytesIO(b"audio"), "guten-morgen.wav"), "model": "whisper-1", "response_format": "verbose_json"})
    assert response.status_code == 200, response.get_json()
    assert asked[0].task == "translate" and response.get_json()["task"] == "translate"
    assert response.get_json()["text"] == "Good morning."


def test_requests_while_the_model_loads_are_503_not_ready():
    """Before the model loads the answer is 503 with Retry-After, not a crash; what the model's declared
    facts already rule out (translating with an English-only model) is a 400 at once."""
    settings = WorkerSettings.from_env({}, whisper_model="tiny.en", log_level="ERROR")
    client = create_app(settings, backend=NeverLoads(settings)).test_client()
    for route in ("/v1/audio/transcriptions", "/transcribe"):
        response = client.post(route, data={"file": (io.BytesIO(b"audio"), "a.wav")})
        assert response.status_code == 503 and response.get_json()["error"]["code"] == "not_ready", route
        assert response.headers["Retry-After"] == "5"
    response = client.post("/v1/audio/translations", data={"file": (io.BytesIO(b"audio"), "a.wav")})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_option"


def test_translations_and_transcriptions_share_one_route_body(monkeypatch):
    from worker import routes

    app = create_app(WorkerSettings.from_env({}, whisper_model="fake", log_level="WARNING"))
    tasks = []
    monkeypatch.setattr(routes, "answer_transcription", lambda task=None: tasks.append(task) or {"ok": True})
    client = app.test_client()
    for path in ("/v1/audio/translations", "/transcribe", "/v1/audio/transcriptions"):
        assert client.post(path, data={"file": (io.BytesIO(b"audio"), "a.wav")}).status_code == 200
    assert tasks == ["translate", None, None]
