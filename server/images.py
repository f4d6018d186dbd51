"""Fast, safe image decoding into the model's input array (request threads, no torch).

- Pixel count is checked from the header, before any pixel is decoded (decompression bombs).
- JPEGs decode in draft mode: libjpeg's DCT scaling yields 1/2, 1/4 or 1/8 of the size directly,
  never smaller than the model needs, so a 12 MP phone photo decodes several times faster.
- EXIF orientation is applied; RGBA/LA/P (alpha over white), CMYK, greyscale, 16-bit and float
  images become 8-bit RGB; animations use their first frame.
- Resize + centre crop reproduce torchvision's ``Resize(shortest side, bicubic)`` +
  ``CenterCrop`` exactly, but resample only the crop box (PIL ``resize(box=...)`` still reads the
  filter's neighbours outside the box), so odd aspect ratios cannot blow up memory either.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}

# Formats people send that PIL cannot (or must not) decode here: answer 415, not "broken image".
_UNSUPPORTED_SIGNATURES = (
    (b"%PDF", "PDF"),
    (b"\x1a\x45\xdf\xa3", "WebM/Matroska video"),
)
_FTYP_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF",
                b"avif": "AVIF", b"avis": "AVIF"}
SUPPORTED_FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF"


@dataclass(frozen=True)
class ImageSpec:
    """How the model wants its pixels: resize (shortest side or squash), crop, normalise."""

    size: int  # output is size x size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_short: int | None = None  # shortest side before the crop; default = size
    resample: str = "bicubic"
    resize_mode: str = "shortest"  # "shortest" (resize + centre crop) or "squash"

    def __post_init__(self):
        if self.resize_mode not in ("shortest", "squash"):
            raise ValueError(f"unsupported resize mode {self.resize_mode!r}")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"unsupported interpolation {self.resample!r}")


def _sniff_unsupported(data: bytes) -> str | None:
    head = data[:512]
    for signature, name in _UNSUPPORTED_SIGNATURES:
        if head.startswith(signature):
            return name
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return _FTYP_BRANDS.get(brand, "MP4/QuickTime video")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "SVG"
    return None


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) and check format and pixel count; raises 4xx ServiceErrors."""
    if not data:
        raise InvalidInput("the image file is empty", code="empty_file")
    unsupported = _sniff_unsupported(data)
    if unsupported:
        raise UnsupportedMedia(f"{unsupported} is not supported; send {SUPPORTED_FORMATS}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(f"image has more than {max_pixels} pixels", code="too_many_pixels") from None
    except UnidentifiedImageError:
        raise InvalidInput(f"not a decodable image; send {SUPPORTED_FORMATS}", code="invalid_image") from None
    except Exception as err:  # noqa: BLE001 - any parser failure on client bytes is the client's 400
        if "truncated" in str(err):
            raise InvalidInput("the image file is truncated", code="truncated_image") from None
        raise InvalidInput(f"not a decodable image ({type(err).__name__})", code="invalid_image") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidInput("image has no pixels", code="invalid_image")
    if width * height > max_pixels:
        raise PayloadTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is "
                              f"{max_pixels} (MAX_IMAGE_PIXELS)", code="too_many_pixels")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (alpha composited over white, 16-bit/float rescaled)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if mode == "F" and values.max(initial=0) <= 1.0:
            top = 1.0
        grey = np.clip(values / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _crop_box(width: int, height: int, spec: ImageSpec) -> tuple[float, float, float, float]:
    """The source rectangle that torchvision's Resize(shortest)+CenterCrop ends up showing."""
    if spec.resize_mode == "squash":
        return (0.0, 0.0, float(width), float(height))
    target = spec.resize_short or spec.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = target, int(target * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    left = int(round((new_w - spec.size) / 2.0))
    top = int(round((new_h - spec.size) / 2.0))
    scale_x, scale_y = width / new_w, height / new_h
    return (left * scale_x, top * scale_y, (left + spec.size) * scale_x, (top + spec.size) * scale_y)


def load_rgb(data: bytes, spec: ImageSpec, max_pixels: int) -> Image.Image:
    """Bytes -> upright 8-bit RGB image, JPEGs DCT-scaled to no less than the model needs."""
    image = open_image(data, max_pixels)
    try:
        if image.format == "JPEG":
            target = spec.resize_short or spec.size
            image.draft(None, (target, target))  # no-op unless DCT scaling keeps >= target
        image.seek(0)  # first frame of animations
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except OSError as err:
        if "truncated" in str(err):
            raise InvalidInput("the image file is truncated", code="truncated_image") from None
        raise InvalidInput(f"the image could not be decoded: {err}", code="invalid_image") from None
    except Exception as err:  # noqa: BLE001 - corrupt data can raise anything from a plugin
        raise InvalidInput(f"the image could not be decoded ({type(err).__name__})",
                           code="invalid_image") from None


def to_model_array(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """RGB image -> normalised float32 array (3, size, size): resize + centre crop + normalise."""
    box = _crop_box(image.width, image.height, spec)
    image = image.resize((spec.size, spec.size), _RESAMPLE[spec.resample], box=box)
    pixels = np.asarray(image, dtype=np.float32) * (1.0 / 255.0)
    pixels = (pixels - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def decode_image(data: bytes, spec: ImageSpec, max_pixels: int) -> np.ndarray:
    """Bytes -> the model's input array; 4xx ServiceErrors on bad input."""
    return to_model_array(load_rgb(data, spec, max_pixels), spec)
