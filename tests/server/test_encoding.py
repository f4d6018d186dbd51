"""Embedding encodings: orjson floats keep the 7-decimal values, base64 float32 round-trips exactly."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from core.web.encoding import base64_float32, float32_base64, json_response, vector
from tests.media import encode
from tests.server.test_api import make_client

pytestmark = pytest.mark.unit

PNG = encode(Image.new("RGB", (40, 30), (10, 200, 30)), "PNG")


@pytest.fixture(scope="module")
def client():
    return make_client()[1]


def test_float32_base64_is_little_endian_float32_and_round_trips_exactly():
    values = np.random.default_rng(1).standard_normal(512).astype(np.float32)
    text = float32_base64(values)
    assert base64.b64decode(text) == values.astype("<f4").tobytes()  # what OpenAI's SDK decodes
    assert len(base64.b64decode(text)) == 512 * 4
    assert np.array_equal(base64_float32(text), values)
    assert np.array_equal(base64_float32(float32_base64(values.astype(np.float64))), values)


def test_orjson_body_equals_the_json_module_body():
    values = np.random.default_rng(2).standard_normal(512).astype(np.float32)
    body = {"model": "m", "dim": 512, "embedding": vector(values), "note": "é"}
    rendered = json_response(body)
    assert rendered.mimetype == "application/json"
    assert json.loads(rendered.get_data()) == body
    assert list(json.loads(rendered.get_data())) == list(body)  # documented key order kept


@pytest.mark.parametrize("how", ["form", "query", "json"])
def test_base64_embed_round_trips_exactly_to_the_float_answer(client, how):
    floats = client.post("/embed", data={"image": (io.BytesIO(PNG), "a.png"), "text": ["a cat"]}).get_json()
    if how == "form":
        response = client.post("/embed", data={"image": (io.BytesIO(PNG), "a.png"), "text": ["a cat"],
                                               "encoding_format": "base64"})
    elif how == "query":
        response = client.post("/embed?encoding_format=base64",
                               data={"image": (io.BytesIO(PNG), "a.png"), "text": ["a cat"]})
    else:
        response = client.post("/embed", json={"images": [base64.b64encode(PNG).decode()], "texts": ["a cat"],
                                               "encoding_format": "base64"})
    assert response.status_code == 200, response.get_data()
    body = response.get_json()
    assert set(body) == {"model", "dim", "image_embeddings", "text_embeddings"}
    for kind in ("image_embeddings", "text_embeddings"):
        (encoded,) = body[kind]
        assert isinstance(encoded, str)
        decoded = base64_float32(encoded)
        assert decoded.shape == (body["dim"],) and decoded.dtype == np.float32
        # The float answer is the same float32 vector rounded to 7 decimals.
        assert np.array_equal(np.round(decoded.astype(np.float64), 7), np.asarray(floats[kind][0]))


def test_single_input_base64_embedding_is_a_string(client):
    body = client.post("/embed", data={"text": "hello", "encoding_format": "base64"}).get_json()
    assert isinstance(body["embedding"], str) and body["embedding"] == body["text_embeddings"][0]
    assert base64_float32(body["embedding"]).shape == (body["dim"],)


@pytest.mark.parametrize("value", ["float16", "BASE64", 5])
def test_unknown_encoding_format_is_a_400_and_the_next_request_works(client, value):
    response = client.post("/embed", json={"texts": ["hi"], "encoding_format": value})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_option"
    assert "encoding_format" in response.get_json()["error"]["message"]
    assert client.post("/embed", json={"texts": ["hi"], "encoding_format": "float"}).status_code == 200
