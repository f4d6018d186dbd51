"""WhisperClient against a real worker (gunicorn, tiny.en, API key): every response format, options, errors."""

from __future__ import annotations

import re

import pytest
from inference_client import RESPONSE_FORMATS, BadRequest, ConfigurationError, Unauthorized, WhisperClient

from tests.clients.conftest import API_KEY
from tests.media import SENTENCES
from tests.worker.conftest import assert_heard

pytestmark = pytest.mark.integration


def test_every_response_format(workers, clips):
    client = WhisperClient(workers[0].url, API_KEY)
    results = {fmt: client.transcribe(clips[1], fmt) for fmt in RESPONSE_FORMATS}
    assert set(results["json"]) >= {"text", "language", "duration", "segments"}
    assert_heard(results["json"]["text"], SENTENCES[1])
    assert "avg_logprob" in results["verbose_json"]["segments"][0]
    assert results["text"].strip() == results["json"]["text"]
    assert re.match(r"1\n00:00:00,000 --> 00:00:0\d,\d{3}\n", results["srt"])
    assert results["vtt"].startswith("WEBVTT\n\n00:00:00.000 --> ")
    for subtitles in (results["srt"], results["vtt"]):
        assert_heard(subtitles, SENTENCES[1])


def test_options_reach_the_worker(workers, clips, monkeypatch):
    monkeypatch.setenv("WHISPER_WORKER_URL", workers[1].url)
    monkeypatch.setenv("WHISPER_WORKER_API_KEY", API_KEY)
    with open(clips[4], "rb") as audio:
        result = WhisperClient().transcribe(audio, "verbose_json", language="en", word_timestamps=True,
                                            beam_size=1, temperature=0.0, initial_prompt="Tomatoes.")
    words = [word["word"].strip(" .,").lower() for segment in result["segments"] for word in segment["words"]]
    assert "tomatoes" in words and result["language"] == "en"
    monkeypatch.delenv("WHISPER_WORKER_URL")
    with pytest.raises(ConfigurationError, match="WHISPER_WORKER_URL"):
        WhisperClient()


def test_errors_carry_the_service_code(workers, clips):
    with pytest.raises(Unauthorized) as wrong_key:
        WhisperClient(workers[0].url, "wrong").transcribe(clips[0])
    assert wrong_key.value.code == "unauthorized"
    client = WhisperClient(workers[0].url, API_KEY)
    with pytest.raises(BadRequest) as not_audio:
        client.transcribe(b"plain text, not audio", "json")
    assert not_audio.value.code == "invalid_audio" and not_audio.value.status == 400
    with pytest.raises(BadRequest) as translate:
        client.transcribe(clips[0], task="translate")
    assert translate.value.code == "invalid_option" and "English-only" in translate.value.message
