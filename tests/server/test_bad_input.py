"""Every bad input gets a clear 4xx JSON error over real HTTP, and the next good request still works."""

from __future__ import annotations

import base64
import io

import pytest
import requests
from PIL import Image

from tests.conftest import run_service
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
    ("multipart cut off before its closing boundary", "post",
     {"data": b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n" + GOOD_JPEG,
      "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 400, "invalid_multipart"),
    ("multipart whose boundary never appears", "post",
     {"data": b"--other\r\n\r\nx\r\n--other--\r\n", "headers": {"Content-Type": "multipart/form-data; boundary=b"}},
     400, "invalid_multipart"),
    ("multipart without a boundary parameter", "post",
     {"data": b"--b\r\n\r\nx\r\n--b--\r\n", "headers": {"Content-Type": "multipart/form-data"}},
     400, "invalid_multipart"),
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


# ---- hostile but valid requests (issue 7): bounded memory, options and bodies ----

TINY_PNG = encode(Image.new("RGB", (40, 30), (200, 30, 30)), "PNG")


def _good_request_still_works(url: str) -> None:
    good = requests.post(url + "/embed", files=files(GOOD_JPEG), timeout=30)
    assert good.status_code == 200 and len(good.json()["embedding"]) == good.json()["dim"]


def _assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("template, labels, code", [
    ("a {} next to a {}", ["cat", "dog"], "invalid_template"),
    ("{}" * 100_000, ["x" * 1024] * 3, "invalid_template"),  # the 200 KB "template bomb"
    ("a photo of a {}" + " " * 1000, ["cat"], "template_too_long"),
    ("a photo of a {}", ["cat", "y" * 1001], "label_too_long"),
], ids=["two placeholders", "template bomb", "long template", "long label"])
def test_classify_templates_and_labels_are_bounded(clip_service, template, labels, code):
    body = {"images": [base64.b64encode(TINY_PNG).decode()], "labels": labels, "template": template}
    _assert_error(requests.post(clip_service.url + "/classify", json=body, timeout=30), 400, code)
    _good_request_still_works(clip_service.url)


def test_json_nested_50000_levels_is_a_400_not_a_500(clip_service):
    body = b'{"texts": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    response = requests.post(clip_service.url + "/embed", data=body, timeout=30,
                             headers={"Content-Type": "application/json"})
    _assert_error(response, 400, "json_too_deep")
    _good_request_still_works(clip_service.url)


@pytest.fixture(scope="module")
def tight_service(tmp_path_factory):
    """A CLIP server with a 16 MiB decode budget and 1 MiB bodies: limits reachable with small files."""
    # The fake model: these limits act before the model, and it starts in a fraction of the time.
    env = {"CLIP_MODEL": "fake", "WEB_THREADS": "4", "MAX_REQUEST_MB": "1", "DECODE_MEMORY_BUDGET_MB": "16",
           "DECODE_MEMORY_WAIT_S": "0.1"}
    with run_service("server", env, tmp_path_factory.mktemp("tight-clip-server")) as running:
        yield running


def test_an_oversized_chunked_body_is_413(tight_service):
    def body():  # a generator: requests sends it chunked, with no Content-Length
        for _ in range(40):
            yield b"\0" * 65536
    response = requests.post(tight_service.url + "/embed", data=body(), timeout=30,
                             headers={"Content-Type": "application/octet-stream"})
    _assert_error(response, 413, "payload_too_large")
    _good_request_still_works(tight_service.url)
    small = requests.post(tight_service.url + "/embed", data=iter([TINY_PNG]), timeout=30,
                          headers={"Content-Type": "image/png"})  # a small chunked body still works
    assert small.status_code == 200, small.text


def test_a_chunked_multipart_upload_is_parsed_like_one_with_a_length(tight_service):
    from urllib3 import encode_multipart_formdata

    body, content_type = encode_multipart_formdata([("image", ("tiny.png", TINY_PNG)), ("text", "a red square")])
    pieces = [body[n:n + 7] for n in range(0, len(body), 7)]  # chunk edges inside delimiters and headers
    chunked = requests.post(tight_service.url + "/embed", data=iter(pieces), timeout=30,
                            headers={"Content-Type": content_type})
    whole = requests.post(tight_service.url + "/embed", data=body, timeout=30, headers={"Content-Type": content_type})
    assert chunked.status_code == whole.status_code == 200, chunked.text
    assert chunked.json()["image_embeddings"] == whole.json()["image_embeddings"]
    assert chunked.json()["text_embeddings"] == whole.json()["text_embeddings"]


def test_an_image_larger_than_the_whole_decode_budget_is_413(tight_service):
    rgba = encode(Image.new("RGBA", (3000, 2000), (10, 20, 30, 128)), "PNG")  # 24 MiB decoded > 16 MiB
    assert len(rgba) < 1024 * 1024
    response = requests.post(tight_service.url + "/embed", files=files(rgba), timeout=30)
    _assert_error(response, 413, "input_too_large_to_decode")
    assert "DECODE_MEMORY_BUDGET_MB" in response.json()["error"]["message"]
    _good_request_still_works(tight_service.url)


def test_a_full_decode_budget_is_429_with_retry_after_then_serves_again():
    # In-process (fake model) so the budget can be held full deterministically from the test.
    from server.app import create_app
    from server.backends.fake import FakeClipBackend
    from server.models import resolve_spec
    from server.settings import ServerSettings
    from tests.conftest import wait_until

    settings = ServerSettings.from_env({}, clip_model="fake", log_level="WARNING",
                                       decode_memory_budget_mb=8, decode_memory_wait_s=0.1)
    app = create_app(settings, backend=FakeClipBackend(settings, resolve_spec(settings)))
    client = app.test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 10)
    budget = app.extensions["memory_budget"]
    with budget.reserve(budget.limit_bytes - 1024):  # another request is decoding something big
        busy = client.post("/embed", data={"image": [(io.BytesIO(TINY_PNG), "a.png")]})
        assert busy.status_code == 429 and busy.get_json()["error"]["code"] == "memory_busy"
        assert int(busy.headers["Retry-After"]) >= 1
        texts_only = client.post("/embed", json={"texts": ["no image, no decode memory"]})
        assert texts_only.status_code == 200
    assert client.post("/embed", data={"image": [(io.BytesIO(TINY_PNG), "a.png")]}).status_code == 200
    assert budget.in_use == 0
