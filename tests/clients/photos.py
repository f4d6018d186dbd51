"""The test images for client-side downscaling: every colour mode and orientation the server handles."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.media import encode, photo_like


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _alpha(base: Image.Image) -> Image.Image:
    """RGBA: a horizontal alpha ramp, so compositing over white (not black) matters."""
    rgba = base.convert("RGBA")
    ramp = np.tile(np.linspace(40, 255, base.width, dtype=np.uint8), (base.height, 1))
    rgba.putalpha(Image.fromarray(ramp, "L"))
    return rgba


def _sixteen_bit(base: Image.Image) -> Image.Image:
    values = np.asarray(base.convert("L"), dtype=np.uint16) * 257
    return Image.fromarray(values)  # mode I;16


def _palette(base: Image.Image, transparent: bool) -> Image.Image:
    image = base.quantize(64)
    if transparent:
        image.info["transparency"] = 0
    return image


def sample_images() -> dict[str, bytes]:
    """name -> file bytes: larger than the model needs unless the name says small."""
    base = photo_like(900, 640, seed=3)
    return {
        "photo.jpg": encode(photo_like(1600, 1200, seed=1), "JPEG", quality=92),
        "portrait.jpg": encode(photo_like(700, 1100, seed=2), "JPEG", quality=90),
        "exif-rotated-6.jpg": encode(base, "JPEG", quality=92, exif=_exif(6)),
        "exif-rotated-3.jpg": encode(base, "JPEG", quality=92, exif=_exif(3)),
        "exif-transposed-5.png": encode(base, "PNG", exif=_exif(5)),
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG", quality=92),
        "palette.png": encode(_palette(base, False), "PNG"),
        "palette-transparent.png": encode(_palette(base, True), "PNG"),
        "alpha.png": encode(_alpha(base), "PNG"),
        "greyscale-alpha.png": encode(_alpha(base).convert("LA"), "PNG"),
        "sixteen-bit.png": encode(_sixteen_bit(base), "PNG"),
        "greyscale.jpg": encode(base.convert("L"), "JPEG", quality=92),
        "one-bit.png": encode(base.convert("1"), "PNG"),
        "webp.webp": encode(base, "WEBP", quality=90),
        "small.jpg": encode(photo_like(200, 150, seed=4), "JPEG", quality=92),
        "small-short-side.png": encode(photo_like(1000, 180, seed=5), "PNG"),
    }
