"""Multipart uploads of several MB are parsed into memory (no temp file, no extra copy) and still work."""

from __future__ import annotations

import io
import tempfile
import wave

import numpy as np
import pytest
from flask import request
from PIL import Image
from werkzeug.datastructures import FileStorage

from core.web.uploads import upload_bytes
from server.app import create_app as create_clip_app
from server.backends.fake import FakeClipBackend
from server.models import resolve_spec
from server.settings import ServerSettings
from tests.conftest import wait_until
from tests.media import encode
from worker.app import create_app as create_whisper_app
from worker.backends.fake import FakeWhisperBackend
from worker.settings import WorkerSettings

pytestmark = pytest.mark.unit


def watch_uploads(app, monkeypatch) -> tuple[list[type], list[str]]:
    """(stream types of the parsed file parts, temp files created) over the app's requests."""
    streams, temp_files = [], []

    @app.after_request
    def _note_streams(response):
        streams.extend(type(upload.stream) for upload in request.files.values())
        return response

    real = tempfile.TemporaryFile  # what a SpooledTemporaryFile rolls over to past 500 KB

    def recording_temporary_file(*args, **kwargs):
        temp_files.append("TemporaryFile")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", recording_temporary_file)
    return streams, temp_files


def test_a_multi_mb_image_upload_makes_no_temp_file_and_embeds_as_the_raw_body(monkeypatch):
    settings = ServerSettings.from_env({}, clip_model="fake", log_level="WARNING")
    app = create_clip_app(settings, backend=FakeClipBackend(settings, resolve_spec(settings)))
    streams, temp_files = watch_uploads(app, monkeypatch)
    client = app.test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 10)
    noise = np.random.default_rng(7).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    photo = encode(Image.fromarray(noise), "PNG")  # about 4 MB: incompressible
    assert len(photo) > 3 * 1024 * 1024

    uploaded = client.post("/embed", data={"image": (io.BytesIO(photo), "noise.png")})
    assert uploaded.status_code == 200, uploaded.get_json()
    assert streams == [io.BytesIO] and temp_files == []
    raw = client.post("/embed", data=photo, content_type="image/png")
    assert uploaded.get_json()["embedding"] == raw.get_json()["embedding"]


def test_a_multi_mb_audio_upload_makes_no_temp_file_and_transcribes(monkeypatch):
    settings = WorkerSettings.from_env({}, whisper_model="fake", log_level="WARNING")
    app = create_whisper_app(settings, backend=FakeWhisperBackend(settings))
    streams, temp_files = watch_uploads(app, monkeypatch)
    wait_until(lambda: app.extensions["model_runner"].health()[0], timeout_s=60)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.sin(np.arange(16000 * 100) * 0.05) * 8000).astype(np.int16).tobytes())
    audio = buffer.getvalue()  # 100 s of 16 kHz PCM: 3.2 MB

    response = app.test_client().post("/transcribe", data={"audio": (io.BytesIO(audio), "tone.wav"),
                                                           "response_format": "verbose_json"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["duration"] == 100.0 and response.get_json()["segments"]
    assert streams == [io.BytesIO] and temp_files == []


def test_an_in_memory_part_is_handed_over_without_a_copy():
    stream = io.BytesIO()
    for _ in range(64):
        stream.write(b"x" * 65536)  # written in pieces, as the form parser does
    stream.seek(0)
    data = upload_bytes(FileStorage(stream))
    assert len(data) == 64 * 65536 and data is stream.getvalue()  # the buffer itself
    stream.seek(10)
    assert upload_bytes(FileStorage(stream)) == b"x" * (64 * 65536 - 10)  # mid-stream: read() as before
