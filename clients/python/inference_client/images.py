"""Downscale photos before upload, as the CLIP server would after it (its published preprocessing).

The server decodes every upload and shrinks it to the model's input size (224 px for ViT-B-32):
for a 12 MP phone photo that is ~5 MB on the wire and the whole entropy decode on the GPU
instance's CPU, which caps what the instance can embed. This module does that part on the
sender's side, the way the server does it, and uploads an image of the published size (tens of
KB). The server then takes its fast path (a crop, no resampling), and the vector does not change:
cosine >= 0.99 against the full upload on every test image (tests/clients/test_downscale.py).

What it reproduces of ``server/images.py``: JPEG draft (DCT-scaled) decoding, EXIF orientation,
the colour conversions (CMYK, palette, alpha over white, 16-bit to its high byte, 1-bit and
greyscale), a resize with the server's filter to ``max_useful_size`` (never upscaled), and its
centre crop where that is exact (``centre_crop_box``): a 224x224 upload for ViT-B-32.
Anything it cannot reproduce exactly (32-bit integer or float images, unreadable files, an
unknown preprocessing) goes as the original bytes, so the server's answer is the same as without
this module, errors included. Needs Pillow, a dependency of the package; where it is missing all
the same (``pip install --no-deps``), every image goes as it is and a warning says so, once.
"""

from __future__ import annotations

import io
import warnings

try:
    from PIL import Image
except ImportError:  # installed without its dependencies: originals are sent, with one warning
    Image = None

# JPEG at this quality, 4:4:4 chroma: 10-100 KB at 224 px (a 5.8 MB entropy-heavy 12 MP photo goes as
# ~100 KB, 59x fewer bytes), within ~3 grey levels of the full upload's model input on average on the
# test images, and cosine >= 0.99 (tests/clients/test_downscale.py). Quality 95 costs 1.3x the bytes;
# 4:2:0 chroma halves them but smears colour edges (palette and 1-bit images: 10x the error).
JPEG_QUALITY = 90
# Pillow's own default guard against decompression bombs stays on: a client never decodes more than
# the server would accept anyway (the server's MAX_IMAGE_PIXELS default is the same order).
_FILTERS = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "nearest": "NEAREST", "lanczos": "LANCZOS"}
_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that makes the image upright (as the server's table).
_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
              7: "TRANSVERSE", 8: "ROTATE_90"}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT = {"I;16": 1, "I;16L": 1, "I;16B": 0}  # mode -> index of the high byte in each sample
# The server shrinks with an integer box filter first while >= 2x the target remains, then resamples.
REDUCING_GAP = 2.0


_warned_missing = False


def available() -> bool:
    """Whether Pillow is installed; without it images are sent as they are, and the first call warns."""
    global _warned_missing
    if Image is None and not _warned_missing:
        _warned_missing = True
        warnings.warn("Pillow is not installed: photos are uploaded whole, not downscaled (more bytes, "
                      "same vectors); pip install pillow", RuntimeWarning, stacklevel=2)
    return Image is not None


def target_size(width: int, height: int, preprocessing: dict) -> tuple[int, int] | None:
    """The size to downscale an upright ``width`` x ``height`` image to, or None to send it as it is."""
    limit = preprocessing.get("max_useful_size") or {}
    if preprocessing.get("resize") == "shortest_side" and isinstance(limit.get("short_side"), int):
        short = limit["short_side"]
        if min(width, height) <= short:
            return None  # small enough: never upscaled here (the server upscales if it must)
        # The long side as the server computes it (torchvision's int()), so its centre crop of this
        # upload starts on the same pixel as its crop of the original would.
        if width <= height:
            return short, int(short * height / width)
        return int(short * width / height), short
    if preprocessing.get("resize") == "squash" and isinstance(limit.get("width"), int) \
            and isinstance(limit.get("height"), int):
        size = (min(width, limit["width"]), min(height, limit["height"]))
        return None if size == (width, height) else size
    return None  # a preprocessing this client does not know


def centre_crop_box(width: int, height: int, preprocessing: dict) -> tuple[int, int, int, int] | None:
    """The server's centre crop of an image already at its resize size, when cropping here is exact.

    Only when the resize size is the input size (CLIP's own preprocessing): the server then takes
    the uploaded crop as it is. With a larger resize size (resize 256, crop 224) it would resize
    the crop again, so the whole resized image goes instead.
    """
    size = preprocessing.get("input_size")
    if preprocessing.get("crop") != "center" or preprocessing.get("resize") != "shortest_side" \
            or size != preprocessing.get("resize_size") or min(width, height) != size:
        return None
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))  # the server's rounding
    return (left, top, left + size, top + size) if (width, height) != (size, size) else None


def preprocessing_of(models: dict) -> dict | None:
    """The image preprocessing a server publishes in its ``GET /v1/models`` body, or None."""
    return ((models.get("data") or [{}])[0]).get("preprocessing") or None


def prepare(name: str, data: bytes, preprocessing: dict | None) -> tuple[str, bytes]:
    """(file name, bytes) to upload: downscaled, and named .jpg, when larger than the model needs."""
    prepared = downscale(data, preprocessing)
    return (name if prepared is data else f"{name.rsplit('.', 1)[0]}.jpg"), prepared


def downscale(data: bytes, preprocessing: dict | None) -> bytes:
    """``data`` prepared for upload (smaller JPEG bytes), or ``data`` itself when nothing is gained."""
    if not preprocessing or Image is None:
        return data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _downscale(data, preprocessing)
    except Exception:  # noqa: BLE001 - anything odd goes as it is: the server answers it (a 4xx if bad)
        return data


def _downscale(data: bytes, preprocessing: dict) -> bytes:
    image = Image.open(io.BytesIO(data))
    if image.mode in ("I", "F"):
        return data  # 32-bit images: the server scales by the full image's range; it stays the reference
    orientation = image.getexif().get(_ORIENTATION, 1)
    turned = orientation in (5, 6, 7, 8)  # stored on its side: width and height swap when upright
    upright = image.size[::-1] if turned else image.size
    size = target_size(*upright, preprocessing)
    if size is None:
        return data
    stored = size[::-1] if turned else size
    if image.format == "JPEG":
        image.draft("RGB" if image.mode in ("RGB", "YCbCr") else None, stored)  # DCT scaling, as the server
    image.seek(0)  # the first frame of an animation, as the server
    image.load()
    image = _to_rgb(image).resize(stored, getattr(Image.Resampling, _FILTERS[preprocessing["filter"]]),
                                  reducing_gap=REDUCING_GAP)
    if orientation in _TRANSPOSE:  # after the resize, on the small image
        image = image.transpose(getattr(Image.Transpose, _TRANSPOSE[orientation]))
    box = centre_crop_box(*image.size, preprocessing)
    if box:
        image = image.crop(box)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    prepared = out.getvalue()
    return prepared if len(prepared) < len(data) else data


def _to_rgb(image):
    """8-bit RGB as the server makes it: alpha over white, 16-bit to its high byte, the rest converted."""
    if image.mode in _SIXTEEN_BIT:
        high = image.tobytes()[_SIXTEEN_BIT[image.mode]::2]
        return Image.frombytes("L", image.size, high).convert("RGB")
    if image.mode in _ALPHA_MODES or image.mode == "P" or "transparency" in image.info:
        rgba = image.convert("RGBA")
        rgb = Image.new("RGB", image.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
        return rgb
    if image.mode == "1":
        return image.convert("L").convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")  # L, CMYK, YCbCr, LAB, HSV
