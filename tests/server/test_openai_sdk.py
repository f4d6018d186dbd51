"""The official ``openai`` Python SDK, unchanged, against the CLIP server (real gunicorn on loopback)."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest
import requests
from openai import OpenAI

from server.demo.shapes import draw_shape
from tests.conftest import run_service
from tests.media import encode

pytestmark = pytest.mark.integration
TEXTS = ["a photo of a red circle", "a photo of a blue square"]


def sdk(url: str, api_key: str = "unused") -> OpenAI:
    """The SDK pointed at the service; no retries, so each test sees the first answer."""
    return OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=60)


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


@pytest.fixture(scope="module")
def red_circle() -> bytes:
    return encode(draw_shape("red", "circle", np.random.default_rng(7), size=(320, 240)))


def native(url: str, **json) -> dict:
    response = requests.post(url + "/embed", json=json, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_sdk_default_encoding_is_base64_and_decodes_to_our_vectors(clip_service):
    raw = sdk(clip_service.url).embeddings.with_raw_response.create(input=TEXTS, model="ShapesCLIP-Tiny")
    wire = raw.http_request.read()
    assert b'"encoding_format":"base64"' in wire.replace(b" ", b"")  # the SDK asks for base64 by default
    on_the_wire = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(on_the_wire, str) and len(base64.b64decode(on_the_wire)) == 64 * 4  # float32
    result = raw.parse()  # ... and decodes it itself
    expected = native(clip_service.url, texts=TEXTS)["text_embeddings"]
    assert [item.index for item in result.data] == [0, 1]
    assert np.allclose([item.embedding for item in result.data], expected, atol=1e-6)
    assert result.model == "ShapesCLIP-Tiny" and result.object == "list"
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (2, 2)


def test_sdk_float_encoding_and_a_single_string(clip_service):
    result = sdk(clip_service.url).embeddings.create(input=TEXTS[0], model="any", encoding_format="float",
                                                     dimensions=64)
    assert len(result.data) == 1 and len(result.data[0].embedding) == 64
    assert np.allclose(result.data[0].embedding, native(clip_service.url, texts=[TEXTS[0]])["embedding"], atol=1e-7)


def test_images_as_data_uris_and_with_modality_image(clip_service, red_circle):
    client = sdk(clip_service.url)
    expected = native(clip_service.url, images=[base64.b64encode(red_circle).decode()])["embedding"]
    mixed = client.embeddings.create(input=[TEXTS[0], data_uri(red_circle), TEXTS[1]], model="m")
    assert np.allclose(mixed.data[1].embedding, expected, atol=1e-6)
    texts = native(clip_service.url, texts=TEXTS)["text_embeddings"]
    assert np.allclose([mixed.data[0].embedding, mixed.data[2].embedding], texts, atol=1e-6)
    plain = client.embeddings.create(input=[base64.b64encode(red_circle).decode()], model="m",
                                     extra_body={"modality": "image"})
    assert np.allclose(plain.data[0].embedding, expected, atol=1e-6)
    # The demo model puts the red circle's photo nearest its own caption.
    assert np.dot(mixed.data[1].embedding, mixed.data[0].embedding) > np.dot(mixed.data[1].embedding,
                                                                              mixed.data[2].embedding)


def test_models_lists_the_served_model(clip_service):
    models = sdk(clip_service.url).models.list()
    assert [model.id for model in models.data] == ["ShapesCLIP-Tiny"]


@pytest.mark.parametrize("kwargs, code, fragment", [
    ({"input": "text", "dimensions": 32}, "invalid_option", "dimensions must be 64"),
    ({"input": ["  "]}, "empty_text", "empty"),
    ({"input": [[1, 2, 3]]}, "invalid_field", "token arrays are not supported"),
    ({"input": "x", "extra_body": {"modality": "image"}}, "invalid_base64", "not valid base64"),
    ({"input": "text", "encoding_format": "int8"}, "invalid_option", "encoding_format"),
])
def test_bad_requests_raise_the_sdks_bad_request_error(clip_service, kwargs, code, fragment):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(clip_service.url).embeddings.create(model="m", **kwargs)
    assert caught.value.status_code == 400 and caught.value.code == code
    assert fragment in caught.value.body["message"]
    assert sdk(clip_service.url).embeddings.create(input="still works", model="m").data  # next one is fine


def test_too_many_inputs_is_a_413_status_error(clip_service):
    with pytest.raises(openai.APIStatusError) as caught:  # the SDK has no class of its own for 413
        sdk(clip_service.url).embeddings.create(input=["a"] * 17, model="m")  # MAX_INPUTS=16
    assert caught.value.status_code == 413 and caught.value.code == "too_many_inputs"
    assert "the limit is 16" in caught.value.message


@pytest.fixture(scope="module")
def guarded_service(tmp_path_factory):
    """A fake-model server with an API key and a tiny rate limit."""
    env = {"CLIP_MODEL": "fake", "API_KEY": "s3cret", "RATE_LIMIT": "3/minute"}
    with run_service("server", env, tmp_path_factory.mktemp("clip-guarded")) as running:
        yield running


def test_wrong_key_raises_authentication_error_then_rate_limit_error(guarded_service):
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(guarded_service.url, api_key="wrong").embeddings.create(input="x", model="m")
    assert caught.value.status_code == 401 and caught.value.code == "unauthorized"
    client = sdk(guarded_service.url, api_key="s3cret")
    assert len(client.embeddings.create(input="x", model="m").data[0].embedding) == 64
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(5):  # 3/minute per address, the 401 above counted too
            client.embeddings.create(input="x", model="m")
    assert caught.value.status_code == 429 and caught.value.code == "rate_limited"
    assert int(caught.value.response.headers["Retry-After"]) > 0
