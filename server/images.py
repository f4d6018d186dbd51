"""Fast, safe image decoding into the model's input array (request threads, no torch).

- Pixel count is checked from the header, before any pixel is decoded (decompression bombs).
- JPEGs decode in draft mode: libjpeg's DCT scaling yields 1/2, 1/4 or 1/8 of the size directly,
  never smaller than the model needs, so a 12 MP phone photo decodes several times faster.
- EXIF orientation is applied; RGBA/LA/P (alpha over white), CMYK, greyscale, 16-bit and float
  images become 8-bit RGB; animations use their first frame.
- Memory is bounded and known before decoding (``estimate_decoded_bytes``, from the header): a
  16-bit greyscale PNG decodes straight to 8 bits; images much larger than the model needs are
  shrunk by an integer box filter (``Image.reduce``) in their own mode before anything else, and
  modes that need converting (palette, alpha, 16-bit TIFF, CMYK, ...) are converted in strips of
  about a megapixel on the way. No per-image float64 and no full-size RGB copy: a 36 MP RGBA PNG
  holds its decoded pixels plus a few MB, not the 680 MB it used to.
- Resize + centre crop reproduce torchvision's ``Resize(shortest side, bicubic)`` +
  ``CenterCrop`` exactly, but resample only the crop box (PIL ``resize(box=...)`` still reads the
  filter's neighbours outside the box), so odd aspect ratios cannot blow up memory either.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

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

    def published(self) -> dict:
        """What the server does to every image, published so that a client can do the costly part
        (decoding a large photo and shrinking it) before upload, and send a fraction of the bytes.

        ``max_useful_size`` is the upload size above which downscaling before upload (same filter)
        loses nothing that this preprocessing keeps: the server would shrink the image to it anyway.
        An upload already at that size takes the fast path (a crop, no resampling).
        """
        if self.resize_mode == "squash":
            return {"input_size": self.size, "resize": "squash", "resize_size": self.size, "filter": self.resample,
                    "crop": "none", "max_useful_size": {"width": self.size, "height": self.size}}
        short = _target_short(self)
        return {"input_size": self.size, "resize": "shortest_side", "resize_size": short, "filter": self.resample,
                "crop": "center", "max_useful_size": {"short_side": short}}


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


# A box-filter reduction keeps at least this many times the pixels the resize needs, so the
# bicubic resize that follows sees detail, not the box filter (Pillow's thumbnail() default).
REDUCING_GAP = 2
# Modes that need converting are converted this many pixels at a time (then reduced).
STRIP_PIXELS = 1 << 20
# Bytes per pixel Pillow stores for a mode (RGB, LA and friends are padded to 4).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA = ("RGBA", "LA", "PA", "La", "RGBa")
# Bytes per pixel held after reduction, by working mode: the reduced image, its RGB copy, the
# orientation copy, and for alpha and 32-bit modes the integer/float32 arrays of the last step.
_REDUCED_BYTES_PER_PIXEL = {"L": 10, "RGB": 10, "RGBa": 28, "I": 24, "F": 24}
_ORIENTATION = 0x0112
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def _target_short(spec: ImageSpec | None) -> int | None:
    if spec is None:
        return None
    return spec.size if spec.resize_mode == "squash" else (spec.resize_short or spec.size)


def reduce_factor(width: int, height: int, spec: ImageSpec | None) -> int:
    """Integer box-filter factor that still leaves REDUCING_GAP x the pixels the resize needs."""
    target = _target_short(spec)
    if not target:
        return 1
    return max(1, min(width, height) // (REDUCING_GAP * target))


def _prepare(data: bytes, spec: ImageSpec | None, max_pixels: int) -> Image.Image:
    """Open (header only), pick the JPEG DCT scale, and have 16-bit greyscale PNGs decode to 8 bits."""
    image = open_image(data, max_pixels)
    if image.format == "JPEG" and spec is not None:
        target = _target_short(spec)
        image.draft(None, (target, target))  # no-op unless DCT scaling keeps >= target
    elif image.format == "PNG" and image.mode == "I;16" and len(image.tile) == 1 \
            and image.tile[0].args == "I;16B":
        # libpng-style row unpacking into "L" that keeps the high byte of each big-endian
        # sample: half the memory of I;16 and no conversion pass (value / 256 vs / 257: < 1 level).
        original = image.tile
        image.tile = [original[0]._replace(args="L;16B")]
        image._mode = "L"  # private in Pillow 13; tests/server/test_images.py pins this path
        if image.mode != "L":  # a Pillow without that attribute: decode as I;16 and convert in strips
            image.tile = original
    return image


def estimate_decoded_bytes(data: bytes, spec: ImageSpec | None, max_pixels: int) -> int:
    """Peak bytes decoding ``data`` will hold, from its header only; raises 4xx ServiceErrors."""
    image = _prepare(data, spec, max_pixels)
    return _estimate(image.mode, *image.size, spec)


def _estimate(mode: str, width: int, height: int, spec: ImageSpec | None) -> int:
    pixels = width * height
    factor = reduce_factor(width, height, spec)
    reduced = math.ceil(width / factor) * math.ceil(height / factor)
    working = _working_mode(mode)
    strip = min(pixels, STRIP_PIXELS) * 16 if working != mode else 0  # strip copy + its conversions
    model = 3 * 4 * (spec.size ** 2) * 3 if spec else 0  # resized RGB, float32 array, its transpose
    return pixels * _STORED_BYTES.get(mode, 4) + strip + reduced * _REDUCED_BYTES_PER_PIXEL[working] + model


def _working_mode(mode: str) -> str:
    """The mode an image is reduced in: 8-bit L/RGB, premultiplied RGBa, or 32-bit I/F."""
    if mode in ("L", "RGB", "I", "F"):
        return mode
    if mode in _SIXTEEN_BIT or mode == "1":
        return "L"
    if mode in _ALPHA or mode == "P":
        return "RGBa"  # P without transparency takes the alpha path too: its alpha is 255
    return "RGB"  # CMYK, YCbCr, LAB, HSV


def _convert(strip: Image.Image, mode: str) -> Image.Image:
    """One strip into its working mode, in integer arithmetic."""
    if strip.mode in _SIXTEEN_BIT:
        high = np.asarray(strip).astype("<u2", copy=False).view(np.uint8)[..., 1::2]
        return Image.fromarray(np.ascontiguousarray(high), "L")  # the high byte = value / 256
    if mode == "RGBa" and strip.mode != "RGBA":
        strip = strip.convert("RGBA")
    return strip.convert(mode)


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """Into its working mode and reduced by ``factor``, a strip at a time where it must convert."""
    mode = _working_mode(image.mode)
    if mode == image.mode:
        return image.reduce(factor) if factor > 1 else image
    width, height = image.size
    rows = factor * max(1, STRIP_PIXELS // (width * factor))  # whole blocks per strip
    out = None
    for top in range(0, height, rows):
        strip = _convert(image.crop((0, top, width, min(height, top + rows))), mode)
        if factor > 1:
            strip = strip.reduce(factor)
        if out is None:
            out = Image.new(mode, (strip.width, math.ceil(height / factor)))
        out.paste(strip, (0, top // factor))
    return out


def _to_rgb(image: Image.Image) -> Image.Image:
    """A working-mode image (small by now) -> 8-bit RGB."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "RGBa":  # over white, premultiplied: c + (255 - alpha)
        pixels = np.asarray(image)
        rgb = pixels[..., :3].astype(np.uint16) + (255 - pixels[..., 3:4])
        return Image.fromarray(np.minimum(rgb, 255).astype(np.uint8), "RGB")
    if mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)
        return Image.fromarray(_to_8bit(values, float(values.max(initial=0)), mode == "F"), "L").convert("RGB")
    return image.convert("RGB")  # L


def _to_8bit(values: np.ndarray, top_value: float, is_float: bool) -> np.ndarray:
    top = 65535.0 if top_value > 255 else 255.0
    if is_float and top_value <= 1.0:
        top = 1.0  # float images in [0, 1]
    return np.clip(values * np.float32(255.0 / top), 0, 255).astype(np.uint8)


def _flatten(image: Image.Image, factor: int) -> Image.Image:
    """Any loaded PIL image -> 8-bit RGB reduced by ``factor`` (alpha over white)."""
    if image.mode in ("I", "F") and factor > 1:
        # The range is the full image's (a reduced maximum could look 8-bit); getextrema is in place.
        top_value = float(image.getextrema()[1])
        values = np.asarray(image.reduce(factor), dtype=np.float32)
        return Image.fromarray(_to_8bit(values, top_value, image.mode == "F"), "L").convert("RGB")
    return _to_rgb(_reduce(image, factor))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB at full size (alpha composited over white, 16-bit/float rescaled)."""
    image.load()
    return _flatten(image, 1)


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


def _load(data: bytes, spec: ImageSpec, max_pixels: int) -> tuple[Image.Image, tuple[int, int], int]:
    """Bytes -> (upright reduced 8-bit RGB image, its upright size before reduction, the factor)."""
    image = _prepare(data, spec, max_pixels)
    try:
        image.seek(0)  # first frame of animations
        image.load()
        orientation = image.getexif().get(_ORIENTATION)
        width, height = image.size
        factor = reduce_factor(width, height, spec)
        image = _flatten(image, factor)
        if orientation in _TRANSPOSE:  # after reducing: the copy it makes is small
            image = image.transpose(_TRANSPOSE[orientation])
            if orientation >= 5:
                width, height = height, width
        return image, (width, height), factor
    except OSError as err:
        if "truncated" in str(err):
            raise InvalidInput("the image file is truncated", code="truncated_image") from None
        raise InvalidInput(f"the image could not be decoded: {err}", code="invalid_image") from None
    except Exception as err:  # noqa: BLE001 - corrupt data can raise anything from a plugin
        raise InvalidInput(f"the image could not be decoded ({type(err).__name__})",
                           code="invalid_image") from None


def load_rgb(data: bytes, spec: ImageSpec, max_pixels: int) -> Image.Image:
    """Bytes -> upright 8-bit RGB image, no smaller than the model needs (JPEG DCT scaling, reduce)."""
    return _load(data, spec, max_pixels)[0]


def to_model_array(image: Image.Image, spec: ImageSpec, full_size: tuple[int, int] | None = None,
                   factor: int = 1) -> np.ndarray:
    """RGB image -> normalised float32 array (3, size, size): resize + centre crop + normalise.

    ``full_size`` and ``factor`` describe a reduced image: the crop box is computed on the full
    size (as torchvision would) and scaled down, so reducing does not move the crop.
    """
    box = _crop_box(*(full_size or image.size), spec)
    if factor > 1:
        box = tuple(value / factor for value in box)
    if _is_plain_crop(box, spec.size):
        # The fast path: an upload already at the published size (a client that downscaled before
        # upload) needs no resampling; at scale 1 the filter's weights are (0, 1, 0) and a crop is exact.
        image = image.crop(tuple(int(value) for value in box))
    else:
        image = image.resize((spec.size, spec.size), _RESAMPLE[spec.resample], box=box)
    # (x / 255 - mean) / std as x * scale - offset, written straight into the (3, H, W) layout:
    # two passes instead of five (convert, scale, subtract, divide, transposing copy), 0.1 ms
    # instead of 0.85 ms at 224 px, equal to within 3e-7. Both are ufuncs, which release the GIL
    # (np.take or fancy-indexing a lookup table would hold it: 3x slower beside another thread).
    channels = np.asarray(image).transpose(2, 0, 1)
    scale, offset = _normalisation(spec.mean, spec.std)
    pixels = np.empty(channels.shape, np.float32)
    np.multiply(channels, scale, out=pixels)
    pixels -= offset
    return pixels


def _is_plain_crop(box: tuple[float, ...], size: int) -> bool:
    """Whether the source box is whole pixels and exactly ``size`` x ``size`` (scale 1)."""
    left, top, right, bottom = box
    return (right - left == size and bottom - top == size
            and all(float(value).is_integer() for value in box))


@functools.lru_cache(maxsize=8)
def _normalisation(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, offset), shaped (3, 1, 1): x * scale - offset = (x / 255 - mean) / std."""
    mean_array, std_array = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return (np.float32(1.0 / 255.0) / std_array)[:, None, None], (mean_array / std_array)[:, None, None]


def decode_image(data: bytes, spec: ImageSpec, max_pixels: int) -> np.ndarray:
    """Bytes -> the model's input array; 4xx ServiceErrors on bad input."""
    image, full_size, factor = _load(data, spec, max_pixels)
    return to_model_array(image, spec, full_size, factor)
