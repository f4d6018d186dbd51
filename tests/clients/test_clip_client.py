"""ClipClient against a real CLIP server (gunicorn, demo model, API key) and a rate-limited one."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from inference_client import (
    BadRequest,
    ClipClient,
    ConfigurationError,
    RateLimited,
    RequestTimedOut,
    Unauthorized,
)

from tests.clients.conftest import API_KEY

pytestmark = pytest.mark.integration


def test_embeds_images_and_texts_in_one_space(clip_server, red_circle):
    client = ClipClient(clip_server.url, API_KEY)
    texts = ["a photo of a red circle", "a photo of a blue square", "a photo of a green triangle"]
    result = client.embed(images=[red_circle, red_circle.read_bytes()], texts=texts)
    assert (result.model, result.dim) == ("ShapesCLIP-Tiny", 64)
    assert len(result.images) == 2 and len(result.texts) == 3
    similarities = np.asarray(result.texts) @ np.asarray(result.images[0])
    assert int(np.argmax(similarities)) == 0  # the red circle is nearest its own caption
    with open(red_circle, "rb") as file:
        assert client.embed_image(file) == pytest.approx(result.images[0], abs=1e-5)
    assert client.embed_text(texts[1]) == pytest.approx(result.texts[1], abs=1e-6)


def test_classifies_with_labels_template_and_top_k(clip_server, red_circle):
    client = ClipClient(clip_server.url, API_KEY)
    labels = client.classify_image(red_circle, ["blue square", "red circle", "green triangle"], top_k=2)
    assert [label.label for label in labels][0] == "red circle" and len(labels) == 2
    assert labels[0].score > 0.5 and labels[0].score >= labels[1].score
    both = client.classify([red_circle, red_circle], ["red circle", "blue square"], template="a drawing of a {}")
    assert len(both) == 2 and all(result[0].label == "red circle" for result in both)


def test_reads_url_and_key_from_the_environment(clip_server, monkeypatch):
    monkeypatch.setenv("CLIP_SERVER_URL", clip_server.url)
    monkeypatch.setenv("CLIP_SERVER_API_KEY", API_KEY)
    assert ClipClient().health()["status"] == "ok"
    assert len(ClipClient().embed_text("a photo of a red circle")) == 64
    monkeypatch.delenv("CLIP_SERVER_URL")
    with pytest.raises(ConfigurationError, match="CLIP_SERVER_URL is not set"):
        ClipClient()


def test_errors_carry_the_service_code_and_message(clip_server):
    with pytest.raises(Unauthorized) as wrong_key:
        ClipClient(clip_server.url, "not-the-key").embed_text("a red circle")
    assert (wrong_key.value.status, wrong_key.value.code) == (401, "unauthorized")
    assert "API key" in wrong_key.value.message
    with pytest.raises(BadRequest) as bad_image:
        ClipClient(clip_server.url, API_KEY).embed(images=[b"this is not an image"])
    assert bad_image.value.code == "invalid_image"
    with pytest.raises(BadRequest) as no_labels:
        ClipClient(clip_server.url, API_KEY).classify([b"x"], [])
    assert no_labels.value.code == "no_labels"


def test_retries_honour_retry_after(rate_limited_server):
    url = rate_limited_server.url
    patient = ClipClient(url, max_retries=2)
    impatient = ClipClient(url, max_retries=0)
    patient.embed_text("warm up")
    with pytest.raises(RateLimited) as limited:
        impatient.embed_text("second in the same second")
    assert limited.value.code == "rate_limited" and limited.value.retry_after >= 1
    time.sleep(1.1)
    patient.embed_text("first in a new second")
    started = time.monotonic()
    patient.embed_text("second in the same second: waits for Retry-After, then succeeds")
    assert time.monotonic() - started >= 0.5


def test_a_silent_server_times_out(monkeypatch):
    with socket.socket() as listener:  # accepts connections (the kernel does) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        client = ClipClient(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5, max_retries=0)
        started = time.monotonic()
        with pytest.raises(RequestTimedOut, match="within 0.5 s"):
            client.embed_text("anyone there?")
        assert time.monotonic() - started < 3
