"""Image decoding: modes, orientation, draft mode, limits, unsupported formats (no model needed)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia
from server.images import ImageSpec, decode_image, estimate_decoded_bytes, load_rgb, reduce_factor
from tests.media import encode, photo_like

pytestmark = pytest.mark.unit

SPEC = ImageSpec(size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
LIMIT = 40_000_000


def rgb_of(data: bytes) -> np.ndarray:
    return np.asarray(load_rgb(data, SPEC, LIMIT), dtype=np.int16)


def test_twelve_megapixel_jpeg_is_dct_scaled_to_no_less_than_the_model_needs():
    data = encode(photo_like(4000, 3000), "JPEG", quality=90)
    assert load_rgb(data, SPEC, LIMIT).size == (500, 375)  # 1/8 scale, both sides >= 224
    png = encode(photo_like(1000, 750), "PNG")
    assert load_rgb(png, SPEC, LIMIT).size == (1000, 750)  # only JPEG has DCT scaling


def test_small_jpeg_is_not_scaled_below_the_model_size():
    data = encode(photo_like(300, 240), "JPEG")
    assert load_rgb(data, SPEC, LIMIT).size == (300, 240)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "CMYK", "L", "1", "P", "I;16", "I", "F"])
def test_every_mode_becomes_rgb(mode):
    base = photo_like(64, 48)
    image = base.convert(mode) if mode not in ("I;16", "I", "F") else base.convert("L").convert(mode)
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    out = decode_image(encode(image, fmt), SPEC, LIMIT)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_transparent_pixels_become_white_not_black():
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert (rgb_of(encode(image, "PNG")) == 255).all()


def test_sixteen_bit_greyscale_keeps_its_range():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    image = Image.fromarray(ramp)  # uint16 -> mode I;16
    rgb = rgb_of(encode(image, "PNG"))
    assert rgb.min() < 10 and rgb.max() > 245  # not clipped to white, not crushed to black


def test_animation_uses_the_first_frame():
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rgb = rgb_of(data)
    assert rgb[..., 0].mean() > 200 and rgb[..., 2].mean() < 50


def test_exif_orientation_is_applied():
    upright = Image.new("RGB", (60, 120), (255, 0, 0))
    upright.paste((0, 0, 255), (0, 60, 60, 120))  # top red, bottom blue, as displayed
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise: a sideways camera
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rgb = rgb_of(encode(stored, "JPEG", exif=exif.tobytes(), quality=95))
    assert rgb.shape[:2] == (120, 60)
    assert rgb[10, 30, 0] > 200 and rgb[110, 30, 2] > 200


def test_one_pixel_and_extreme_aspect_ratios_decode_to_the_model_size():
    for size in [(1, 1), (1, 5000), (5000, 1)]:
        assert decode_image(encode(Image.new("RGB", size, (9, 99, 199)), "PNG"), SPEC, LIMIT).shape == (3, 224, 224)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size and has no pixel data: only a header check can pass it."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    with pytest.raises(PayloadTooLarge) as refused:
        decode_image(_png_header_only(5000, 5000), SPEC, max_pixels=1_000_000)
    assert refused.value.code == "too_many_pixels"
    # The same file under a higher limit reaches the decoder, which finds no pixel data.
    with pytest.raises(InvalidInput):
        decode_image(_png_header_only(5000, 5000), SPEC, max_pixels=LIMIT)


def test_decompression_bomb_far_over_pillows_own_limit_is_a_413():
    with pytest.raises(PayloadTooLarge):
        decode_image(_png_header_only(60000, 60000), SPEC, max_pixels=LIMIT)


@pytest.mark.parametrize("data, name", [
    (b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>", "SVG"),
    (b"<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC"),
])
def test_known_unsupported_formats_are_415(data, name):
    with pytest.raises(UnsupportedMedia, match=name):
        decode_image(data, SPEC, LIMIT)


def test_garbage_empty_and_truncated_are_400_with_their_own_codes():
    codes = {}
    for label, data in {"garbage": bytes(range(256)) * 8, "empty": b"",
                        "truncated": encode(photo_like(800, 600), "JPEG")[:5000]}.items():
        with pytest.raises(InvalidInput) as refused:
            decode_image(data, SPEC, LIMIT)
        codes[label] = refused.value.code
    assert codes == {"garbage": "invalid_image", "empty": "empty_file", "truncated": "truncated_image"}


# ---- decode memory: estimated from the header, integer decoding, reduce before converting ----

def _reference_array(data: bytes, spec: ImageSpec = SPEC) -> np.ndarray:
    """What the model should see: a full-size, full-precision decode (old pipeline), no reducing."""
    from server.images import _crop_box

    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode.startswith("I;16"):
        grey = np.asarray(image, dtype=np.float64) / 65535.0 * 255.0
        rgb = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), "L").convert("RGB")
    elif image.mode == "RGBA":
        pixels = np.asarray(image, dtype=np.float64)
        alpha = pixels[..., 3:4] / 255.0
        rgb = Image.fromarray(np.round(pixels[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8), "RGB")
    else:
        rgb = image.convert("RGB")
    resized = rgb.resize((spec.size, spec.size), Image.Resampling.BICUBIC, box=_crop_box(*rgb.size, spec))
    pixels = np.asarray(resized, dtype=np.float32) / 255.0
    return ((pixels - 0.5) / 0.5).transpose(2, 0, 1)


def _sixteen_bit_grey(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    values = (0.5 + 0.25 * np.sin(12 * x) + 0.25 * np.cos(9 * y)) * 65535
    return Image.fromarray(values.astype(np.uint16))  # mode I;16


def _rgba(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    pixels = np.empty((height, width, 4), np.uint8)
    pixels[..., 0] = 127 + 127 * np.sin(11 * x + 3 * y)
    pixels[..., 1] = 127 + 127 * np.cos(7 * y - 5 * x)
    pixels[..., 2] = 255 * x * y
    pixels[..., 3] = 255 * x  # transparent on the left, opaque on the right
    return Image.fromarray(pixels, "RGBA")


def test_decoded_cost_is_estimated_from_the_header_alone():
    # A PNG that declares 5000 x 5000 and carries no pixels: only a header read can price it.
    rgb = estimate_decoded_bytes(_png_header_only(5000, 5000), SPEC, LIMIT)
    assert 5000 * 5000 * 4 <= rgb <= 5000 * 5000 * 4 * 1.3  # Pillow stores RGB in 4 bytes a pixel
    grey16 = estimate_decoded_bytes(encode(_sixteen_bit_grey(4000, 3000), "PNG", compress_level=1), SPEC, LIMIT)
    assert 4000 * 3000 <= grey16 <= 4000 * 3000 * 1.6  # decoded straight to 8 bits: ~1 byte a pixel
    jpeg = estimate_decoded_bytes(encode(Image.new("RGB", (4000, 3000)), "JPEG"), SPEC, LIMIT)
    assert jpeg < 4000 * 3000  # priced at the DCT-scaled size it will decode to (500 x 375)
    with pytest.raises(PayloadTooLarge):
        estimate_decoded_bytes(_png_header_only(8000, 8000), SPEC, LIMIT)


@pytest.mark.parametrize("make", [_sixteen_bit_grey, _rgba], ids=["16-bit grey", "RGBA"])
def test_sixteen_bit_and_alpha_decode_like_a_full_precision_reference(make):
    data = encode(make(1800, 1350), "PNG")  # 1350 / (2 x 224) -> reduced 3x before resizing
    out, reference = decode_image(data, SPEC, LIMIT), _reference_array(data)
    levels = np.abs(out - reference) * 127.5  # back to 0-255 levels
    assert levels.max() <= 3 and levels.mean() <= 0.6


def test_large_images_are_reduced_in_integer_modes_before_converting():
    assert reduce_factor(6000, 6000, SPEC) == 13 and reduce_factor(1000, 750, SPEC) == 1
    assert load_rgb(encode(_rgba(2400, 1800), "PNG"), SPEC, LIMIT).size == (600, 450)  # 4x, >= 2 x 224


_PEAK_SCRIPT = """
import resource, sys
import numpy as np
from PIL import Image
from server.images import decode_image
from tests.server.test_images import SPEC, _sixteen_bit_grey, _rgba
from tests.media import encode
image = {"grey16": _sixteen_bit_grey, "rgba": _rgba}[sys.argv[1]](4000, 4000)
data = encode(image, "PNG", compress_level=1)
del image
import gc; gc.collect()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decode_image(data, SPEC, 40_000_000)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind, bytes_per_pixel", [("grey16", 1.5), ("rgba", 5.5)])
def test_decoding_a_16_megapixel_png_holds_little_more_than_its_pixels(kind, bytes_per_pixel):
    # In a fresh process, so the peak is this decode's: the old float64 path held ~25 bytes a pixel.
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, kind], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert out.returncode == 0, out.stderr
    growth = int(out.stdout.split()[-1])
    assert growth <= 4000 * 4000 * bytes_per_pixel, f"peak grew {growth / 2**20:.0f} MiB"


def test_normalisation_matches_the_reference_formula_for_every_level():
    # to_model_array computes (x / 255 - mean) / std as x * scale - offset in the (3, H, W)
    # layout; every 8-bit level of every channel must come out as the formula gives it.
    from server.images import to_model_array

    spec = ImageSpec(size=16, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = Image.fromarray(np.stack([levels, levels[::-1], levels.T], axis=-1), "RGB")
    pixels = np.asarray(image, np.float64) / 255.0
    expected = ((pixels - np.asarray(spec.mean)) / np.asarray(spec.std)).transpose(2, 0, 1)
    got = to_model_array(image, spec)
    assert got.shape == (3, 16, 16) and got.dtype == np.float32 and got.flags.c_contiguous
    assert np.abs(got - expected).max() < 1e-6
    assert not np.array_equal(got[0], got[1])  # each channel has its own mean and std


@pytest.mark.parametrize("size", [(224, 298), (389, 224), (224, 224)])
def test_an_upload_at_the_published_size_is_cropped_not_resampled(size, monkeypatch):
    """The fast path for clients that downscale before upload: a crop, equal to what resampling gives."""
    import server.images as images

    data = encode(photo_like(*size, seed=9), "PNG")
    calls = []
    real_resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, *a, **k: calls.append(a) or real_resize(self, *a, **k))
    fast = decode_image(data, SPEC, LIMIT)
    assert not calls  # no resampling at all
    monkeypatch.setattr(images, "_is_plain_crop", lambda box, size: False)
    resampled = decode_image(data, SPEC, LIMIT)
    assert calls  # the same image without the fast path is resampled (at scale 1) ...
    assert np.allclose(fast, resampled, atol=1e-6)  # ... to the same pixels


def test_a_published_preprocessing_says_what_the_decoder_does():
    assert SPEC.published() == {"input_size": 224, "resize": "shortest_side", "resize_size": 224,
                                "filter": "bicubic", "crop": "center", "max_useful_size": {"short_side": 224}}
    wide = ImageSpec(size=224, resize_short=256, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert wide.published()["max_useful_size"] == {"short_side": 256}
    squash = ImageSpec(size=336, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="squash", resample="bilinear")
    assert squash.published()["max_useful_size"] == {"width": 336, "height": 336}
