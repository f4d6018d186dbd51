"""The images of one request decode on several threads: same results, same first error, same budget."""

from __future__ import annotations

import base64
import io
import threading
import time

import pytest

import server.backends.base
import server.service
from server.app import create_app
from server.backends.fake import FakeClipBackend
from server.decode_pool import decode_all, pool_threads, shared_pool
from server.images import estimate_decoded_bytes
from server.models import resolve_spec
from server.settings import ServerSettings
from tests.conftest import wait_until
from tests.media import encode, photo_like

pytestmark = pytest.mark.unit

PHOTOS = [encode(photo_like(320 + 40 * n, 240, seed=n), "PNG" if n % 2 else "JPEG") for n in range(6)]
TRUNCATED_JPEG = encode(photo_like(640, 480), "JPEG")[:3000]  # header fine, decoding fails: truncated_image


def corrupt_png() -> bytes:
    """A PNG whose header reads fine and whose pixel data does not: invalid_image when decoded."""
    data = bytearray(encode(photo_like(200, 150, seed=9), "PNG"))
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    return bytes(data)


CORRUPT_PNG = corrupt_png()


def make_app(**overrides):
    settings = ServerSettings.from_env({}, clip_model="fake", log_level="WARNING", **overrides)
    app = create_app(settings, backend=FakeClipBackend(settings, resolve_spec(settings)))
    wait_until(lambda: app.test_client().get("/health").status_code == 200, 10)
    return app


@pytest.fixture
def decode_threads(monkeypatch):
    """Thread idents of every image decode; each decode takes 30 ms longer, so decodes overlap."""
    idents = []
    real = server.backends.base.decode_image

    def slow_decode(data, spec, max_pixels):
        idents.append(threading.get_ident())
        time.sleep(0.03)
        return real(data, spec, max_pixels)

    monkeypatch.setattr(server.backends.base, "decode_image", slow_decode)
    monkeypatch.setattr(server.service, "pool_threads", lambda: 3)  # the same on any machine
    return idents


def embed_images(client, images):
    return client.post("/embed", json={"images": [base64.b64encode(data).decode() for data in images]})


def test_a_request_decodes_its_images_on_several_threads_with_the_results_in_order(decode_threads):
    client = make_app().test_client()
    together = embed_images(client, PHOTOS)
    assert together.status_code == 200, together.get_json()
    assert len(decode_threads) == len(PHOTOS) and len(set(decode_threads)) > 1
    one_by_one = [embed_images(client, [photo]).get_json()["embedding"] for photo in PHOTOS]
    assert together.get_json()["image_embeddings"] == one_by_one


@pytest.mark.parametrize("bad", [(2, TRUNCATED_JPEG, 4, CORRUPT_PNG), (2, CORRUPT_PNG, 4, TRUNCATED_JPEG)],
                         ids=["truncated first", "corrupt first"])
def test_the_first_bad_image_gives_the_error_even_when_a_later_one_fails_sooner(decode_threads, monkeypatch, bad):
    first, first_data, later, later_data = bad
    images = list(PHOTOS)
    images[first], images[later] = first_data, later_data
    real = server.backends.base.decode_image

    def first_bad_one_is_slowest(data, spec, max_pixels):
        if data == first_data:
            time.sleep(0.3)  # the later bad image has failed on another thread by now
        return real(data, spec, max_pixels)

    monkeypatch.setattr(server.backends.base, "decode_image", first_bad_one_is_slowest)
    client = make_app().test_client()
    parallel = embed_images(client, images)
    monkeypatch.setattr(server.service, "pool_threads", lambda: 1)  # one after another, as before
    serial = embed_images(client, images)
    assert parallel.status_code == serial.status_code == 400
    assert parallel.get_json() == serial.get_json()
    assert parallel.get_json()["error"]["code"] == ("truncated_image" if first_data == TRUNCATED_JPEG
                                                    else "invalid_image")
    assert client.post("/embed", json={"texts": ["still serving"]}).status_code == 200


def test_the_reservation_covers_the_images_decoding_at_once_and_only_uses_free_room(decode_threads):
    app = make_app(decode_memory_budget_mb=64)
    budget, client = app.extensions["memory_budget"], app.test_client()
    spec = app.extensions["model_runner"].backend.image_spec
    largest_first = sorted((estimate_decoded_bytes(p, spec, 10**9) for p in PHOTOS), reverse=True)

    assert embed_images(client, PHOTOS).status_code == 200
    assert budget.peak == sum(largest_first[:3])  # three decode at once (pool_threads is 3 here)

    # Room for the largest image only: they decode one after another and reserve what they did before.
    decode_threads.clear()
    budget.peak = 0
    with budget.reserve(budget.limit_bytes - largest_first[0] - 1024):
        assert embed_images(client, PHOTOS).status_code == 200
        assert budget.peak == budget.limit_bytes - 1024
    assert len(set(decode_threads)) == 1 and budget.in_use == 0


def test_results_keep_their_order_and_the_lowest_index_error_wins():
    assert decode_all(lambda n: n * n, list(range(20)), parallel=4) == [n * n for n in range(20)]

    def decode(n):
        if n in (5, 9):
            time.sleep(0.1 if n == 5 else 0)  # 9 fails first
            raise ValueError(n)
        return n

    with pytest.raises(ValueError) as raised:
        decode_all(decode, list(range(12)), parallel=4)
    assert raised.value.args == (5,)


def test_a_busy_pool_does_not_stall_a_request():
    release = threading.Event()
    blockers = [shared_pool().submit(release.wait, 10) for _ in range(pool_threads())]  # every pool thread busy
    try:
        started = time.monotonic()
        assert decode_all(lambda n: n + 1, [1, 2, 3], parallel=3) == [2, 3, 4]  # the request's thread did it all
        assert time.monotonic() - started < 5
    finally:
        release.set()
        for blocker in blockers:
            blocker.result(10)


def test_a_bad_image_in_a_multi_image_request_is_named_by_its_position():
    client = make_app().test_client()
    images = [PHOTOS[0], PHOTOS[1], TRUNCATED_JPEG, PHOTOS[2]]
    response = client.post("/embed", data={"image": [(io.BytesIO(data), f"{n}.jpg") for n, data in enumerate(images)]})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "truncated_image"
    assert response.get_json()["error"]["message"].startswith("image 3 of 4: ")
    alone = client.post("/embed", data={"image": (io.BytesIO(TRUNCATED_JPEG), "x.jpg")})
    assert alone.status_code == 400 and not alone.get_json()["error"]["message"].startswith("image ")
