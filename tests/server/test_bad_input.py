"""Every bad input gets a clear 4xx JSON error over real HTTP, and the next good request still works."""

from __future__ import annotations

import base64

import pytest
import requests
from PIL import Image

from tests.media import encode, photo_like

pytestmark = [pytest.mark.integration]

GOOD_JPEG = encode(photo_like(120, 90))
TRUNCATED_JPEG = encode(photo_like(640, 480), "JPEG")[:3000]
SVG = b"<svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'><rect width='4' height='4'/></svg>"
HUGE_PNG = encode(Image.new("L", (5000, 5000)), "PNG", optimize=True)  # 25 MP > the test's 20 MP limit


def files(*parts):
    return [("image", (f"f{n}.bin", data)) for n, data in enumerate(parts)]


BAD_INPUTS = [
    # (name, method, request kwargs, status, code)
    ("nothing at all", "post", {}, 400, "no_input"),
    ("empty multipart", "post", {"data": {"unused": ""}, "files": []}, 400, "unknown_field"),
    ("wrong file field name", "post", {"files": [("photo", ("p.jpg", GOOD_JPEG))]}, 400, "unknown_field"),
    ("image sent as a text field", "post", {"data": {"image": "photo.jpg"}}, 400, "invalid_field"),
    ("empty file", "post", {"files": files(b"")}, 400, "empty_file"),
    ("bytes that are not an image", "post", {"files": files(b"hello, I am a text file\n" * 20)}, 400, "invalid_image"),
    ("truncated JPEG", "post", {"files": files(TRUNCATED_JPEG)}, 400, "truncated_image"),
    ("SVG", "post", {"files": [("image", ("x.svg", SVG, "image/svg+xml"))]}, 415, "unsupported_media_type"),
    ("SVG with a neutral part type", "post", {"files": files(SVG)}, 415, "unsupported_media_type"),
    ("too many inputs", "post", {"files": files(*[GOOD_JPEG] * 17)}, 413, "too_many_inputs"),
    ("too many pixels", "post", {"files": files(HUGE_PNG)}, 413, "too_many_pixels"),
    ("empty text", "post", {"data": {"text": "   "}}, 400, "empty_text"),
    ("malformed JSON", "post", {"data": b'{"texts": ["a"', "headers": {"Content-Type": "application/json"}},
     400, "invalid_json"),
    ("JSON that is not an object", "post", {"json": ["a"]}, 400, "invalid_json"),
    ("JSON unknown key", "post", {"json": {"image_urls": ["x"]}}, 400, "unknown_field"),
    ("bad base64", "post", {"json": {"images": ["not base64 at all!!"]}}, 400, "invalid_base64"),
    ("base64 of garbage", "post", {"json": {"images": [base64.b64encode(b"garbage" * 10).decode()]}},
     400, "invalid_image"),
    ("image URL instead of bytes", "post", {"json": {"images": ["https://example.com/cat.jpg"]}},
     400, "url_not_supported"),
    ("number where a text belongs", "post", {"json": {"texts": [42]}}, 400, "invalid_field"),
    ("plain text body", "post", {"data": b"hello", "headers": {"Content-Type": "text/plain"}},
     415, "unsupported_media_type"),
    ("wrong method", "get", {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize("name, method, kwargs, status, code", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_a_clear_4xx_and_the_service_keeps_serving(clip_service, name, method, kwargs, status, code):
    response = getattr(requests, method)(clip_service.url + "/embed", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 10
    good = requests.post(clip_service.url + "/embed", files=files(GOOD_JPEG), timeout=30)
    assert good.status_code == 200 and len(good.json()["embedding"]) == good.json()["dim"]


def test_no_bad_input_turned_health_red(clip_service):
    body = requests.get(clip_service.url + "/health", timeout=5).json()
    assert body["status"] == "ok" and body["stats"]["failed_batches"] == 0
