"""Every bad upload or option gets a 4xx JSON error over real HTTP; the worker keeps serving.

The worker runs with WHISPER_MODEL=fake (real gunicorn, decoding and batching; English-only like
tiny.en), so these cases take milliseconds each; nothing here depends on what Whisper hears.
"""

from __future__ import annotations

import pytest
import requests
from PIL import Image

from tests.media import encode

pytestmark = [pytest.mark.integration]


def upload(data: bytes, name: str = "a.bin", field: str = "audio"):
    return {"files": {field: (name, data)}}


@pytest.fixture(scope="module")
def cases(speech):
    good = speech.sentences[0].read_bytes()
    m4a = speech.containers["m4a"].read_bytes()
    return [
        ("no file", {}, 400, "no_input"),
        ("wrong field name", upload(good, field="recording"), 400, "unknown_field"),
        ("two files", {"files": [("audio", ("a.wav", good)), ("audio", ("b.wav", good))]}, 400, "too_many_inputs"),
        ("empty upload", upload(b""), 400, "empty_file"),
        ("not media", upload(b"this is definitely not audio " * 50), 400, "invalid_audio"),
        ("truncated m4a", upload(m4a[:3000], "cut.m4a"), 400, "invalid_audio"),
        ("an image", upload(encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG"), "x.png"), 415,
         "unsupported_media_type"),
        ("video with no audio", upload(speech.video_without_audio.read_bytes(), "v.mp4"), 400, "no_audio_stream"),
        ("over the duration limit", upload(speech.over_limit.read_bytes(), "long.opus"), 413, "audio_too_long"),
        ("unknown response_format", {**upload(good), "data": {"response_format": "docx"}}, 400, "invalid_option"),
        ("bad beam_size", {**upload(good), "data": {"beam_size": "0"}}, 400, "invalid_option"),
        ("beam_size not a number", {**upload(good), "data": {"beam_size": "five"}}, 400, "invalid_option"),
        ("temperature out of range", {**upload(good), "data": {"temperature": "3"}}, 400, "invalid_option"),
        ("seven temperatures", {**upload(good), "data": {"temperature": "0,0.1,0.2,0.3,0.4,0.5,0.6"}}, 400,
         "invalid_option"),
        ("prompt too long", {**upload(good), "data": {"prompt": "x" * 2001}}, 400, "invalid_option"),
        ("beam_size too large", {**upload(good), "data": {"beam_size": "11"}}, 400, "invalid_option"),
        ("bad boolean", {**upload(good), "data": {"word_timestamps": "maybe"}}, 400, "invalid_option"),
        ("unknown language", {**upload(good), "data": {"language": "xx"}}, 400, "invalid_option"),
        ("non-English on an English-only model", {**upload(good), "data": {"language": "de"}}, 400,
         "invalid_option"),
        ("translate on an English-only model", {**upload(good), "data": {"task": "translate"}}, 400,
         "invalid_option"),
        ("unknown task", {**upload(good), "data": {"task": "summarise"}}, 400, "invalid_option"),
        ("unknown option", {**upload(good), "data": {"speed": "fast"}}, 400, "unknown_field"),
        ("JSON instead of a file", {"json": {"audio": "base64?"}}, 400, "no_input"),
    ]


def test_every_bad_input_is_a_clear_4xx_and_the_next_request_works(fake_whisper_service, speech, cases):
    good = speech.sentences[0]
    for name, kwargs, status, code in cases:
        response = requests.post(fake_whisper_service.url + "/transcribe", timeout=60, **kwargs)
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"]["code"] == code, (name, response.text)
        with open(good, "rb") as audio:
            ok = requests.post(fake_whisper_service.url + "/transcribe", files={"audio": ("g.wav", audio)}, timeout=120)
        assert ok.status_code == 200, (name, ok.text)
    health = requests.get(fake_whisper_service.url + "/health", timeout=5).json()
    assert health["status"] == "ok" and health["stats"]["failed_batches"] == 0


def test_wrong_method_is_405_json(fake_whisper_service):
    response = requests.get(fake_whisper_service.url + "/transcribe", timeout=5)
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
