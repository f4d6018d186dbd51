"""Client-side downscaling: the server's published preprocessing, done before upload, keeps the vector."""

from __future__ import annotations

import io
import warnings

import inference_client.images as image_prep
import numpy as np
import pytest
from inference_client import ClipClient
from PIL import Image

from server.images import ImageSpec, decode_image
from tests.clients.conftest import API_KEY, QUICK_STOP
from tests.clients.photos import sample_images
from tests.conftest import run_service

SPEC = ImageSpec(size=224, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
SMALL = ("small.jpg", "small-short-side.png")  # shortest side already at or under 224 px
PIXELS = 10 ** 8


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    return sample_images()


@pytest.mark.unit
def test_each_image_reaches_the_model_as_the_full_upload_would(images):
    """The server's input array from the prepared upload is the full upload's, to JPEG noise."""
    for name, data in images.items():
        prepared = image_prep.downscale(data, SPEC.published())
        full, small = decode_image(data, SPEC, PIXELS), decode_image(prepared, SPEC, PIXELS)
        if name in SMALL:
            assert prepared is data, name  # never upscaled by the client: the original goes
            continue
        assert len(prepared) < len(data) / (1.5 if name == "one-bit.png" else 3), name  # 1 bit/px packs well
        # Normalised units (std ~0.27): 0.05 is ~3.5 grey levels on average; a missed EXIF rotation
        # or alpha over black instead of white is 0.3-1.0.
        assert np.abs(full - small).mean() < 0.05, name
        upright = Image.open(io.BytesIO(prepared))
        assert min(upright.size) == 224 and upright.format == "JPEG", name


@pytest.mark.unit
def test_the_prepared_upload_is_upright_and_cut_where_the_server_cuts():
    """A 1000x600 photo stored on its side (EXIF 6): upright, the long side by the server's int()."""
    stored = Image.new("RGB", (600, 1000), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif.tobytes())
    # Resize 256 then crop 224 (HF's CLIPImageProcessor style): the client must not crop, or the
    # server would resize its crop again; it sends the whole resized image.
    resize_then_crop = ImageSpec(size=224, resize_short=256, mean=(0.5,) * 3, std=(0.5,) * 3).published()
    prepared = Image.open(io.BytesIO(image_prep.downscale(buffer.getvalue(), resize_then_crop)))
    assert prepared.size == (426, 256) and not prepared.getexif().get(0x0112)
    # CLIP's own (resize 224, crop 224): the server's centre crop is exact here, so 224x224 goes.
    assert Image.open(io.BytesIO(image_prep.downscale(buffer.getvalue(), SPEC.published()))).size == (224, 224)
    assert image_prep.centre_crop_box(373, 224, SPEC.published()) == (74, 0, 298, 224)  # round(74.5): the server's


@pytest.mark.unit
def test_squash_models_shrink_each_side_to_the_input_size():
    squash = ImageSpec(size=224, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="squash").published()
    assert image_prep.target_size(1000, 300, squash) == (224, 224)
    assert image_prep.target_size(1000, 200, squash) == (224, 200)
    assert image_prep.target_size(200, 100, squash) is None


@pytest.mark.unit
def test_originals_go_when_the_preprocessing_is_unknown_or_pillow_is_missing(images, monkeypatch):
    data = images["photo.jpg"]
    assert image_prep.downscale(data, None) is data
    assert image_prep.downscale(data, {"resize": "letterbox", "max_useful_size": {"short_side": 224}}) is data
    assert image_prep.downscale(b"not an image", SPEC.published()) == b"not an image"  # the server says why
    monkeypatch.setattr(image_prep, "Image", None)  # installed with --no-deps: Pillow missing after all
    monkeypatch.setattr(image_prep, "_warned_missing", False)
    with pytest.warns(RuntimeWarning, match="Pillow is not installed: photos are uploaded whole"):
        assert not image_prep.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once is enough
        assert not image_prep.available() and image_prep.downscale(data, SPEC.published()) is data


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    env = {"CLIP_MODEL": "demo", "WEB_THREADS": "4", "API_KEY": API_KEY, **QUICK_STOP}
    with run_service("server", env, tmp_path_factory.mktemp("downscale-demo")) as running:
        yield running


@pytest.fixture(scope="module")
def vit_server(tmp_path_factory):
    env = {"CLIP_MODEL": "ViT-B-32", "CLIP_PRETRAINED": "random", "WEB_THREADS": "4", **QUICK_STOP}
    with run_service("server", env, tmp_path_factory.mktemp("downscale-vit")) as running:
        yield running


def _cosines(client: ClipClient, images: dict[str, bytes]) -> dict[str, float]:
    names = list(images)
    full = client.embed(images=[images[n] for n in names], resize=False).images
    small = client.embed(images=[images[n] for n in names]).images
    return {name: float(np.dot(a, b)) for name, a, b in zip(names, full, small)}


@pytest.mark.integration
@pytest.mark.parametrize("which", ["demo_server", "vit_server"])
def test_downscaled_uploads_embed_like_the_full_upload(which, images, request):
    """cosine >= 0.99 on every test image, on the demo model and on real ViT-B-32 (random weights)."""
    server = request.getfixturevalue(which)
    client = ClipClient(server.url, API_KEY)
    published = client.preprocessing()
    assert published and published["resize"] == "shortest_side" and published["max_useful_size"]["short_side"]
    cosines = _cosines(client, images)
    assert min(cosines.values()) >= 0.99, cosines


@pytest.mark.integration
def test_the_preprocessing_is_read_once_and_resize_false_sends_the_original(demo_server, images, monkeypatch):
    client = ClipClient(demo_server.url, API_KEY)
    sent, asked = [], []
    original_request = client.http.request

    def spy(method, path, **kwargs):
        asked.append(path)
        for _field, (_name, data) in kwargs.get("files") or []:
            sent.append(len(data))
        return original_request(method, path, **kwargs)

    monkeypatch.setattr(client.http, "request", spy)
    photo = images["photo.jpg"]
    client.embed_image(photo)
    client.classify_image(photo, ["red", "blue"])
    client.embed_image(photo, resize=False)
    assert asked.count("/v1/models") == 1
    assert sent[0] == sent[1] < len(photo) / 3 and sent[2] == len(photo)
    assert ClipClient(demo_server.url, API_KEY, resize=False).prepare(photo, "p.jpg")[1] is photo


@pytest.mark.integration
def test_a_server_without_published_preprocessing_gets_the_original(fake_servers, images, monkeypatch):
    """An older server (no preprocessing in /v1/models, or no /v1/models): original bytes, no error."""
    client = ClipClient(fake_servers[0].url)
    from inference_client.errors import NotFound

    def no_route(method, path, **kwargs):
        raise NotFound(404, "not_found", "no such route", url=client.http.url)

    monkeypatch.setattr(client.http, "request", no_route)
    photo = images["photo.jpg"]
    assert client.prepare(photo, "p.jpg")[1] is photo
    assert client._preprocessing_checked == float("inf")  # never asked again
