"""Read images, texts and options from a request: multipart, JSON (base64) or a raw image body.

Parsing only: no decoding beyond base64. Each malformed shape gets its own 4xx with a message
that says what to send instead.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from flask import request

from core.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia
from core.web.json_body import read_json_body
from core.web.uploads import upload_bytes

IMAGE_FIELDS = ("image", "images")
TEXT_FIELDS = ("text", "texts")
_WHITESPACE = re.compile(r"\s+")


@dataclass
class Inputs:
    """What a request carried: image bytes, texts and any extra option fields."""

    images: list[bytes] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    options: dict[str, list] = field(default_factory=dict)

    def option(self, name: str):
        """The single value of an option field, or None."""
        values = self.options.get(name) or []
        return values[0] if values else None


def read_inputs(option_fields: tuple[str, ...] = ()) -> Inputs:
    """Parse the current request by its Content-Type."""
    mimetype = request.mimetype or ""
    if mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return _from_form(option_fields)
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return _from_json(option_fields)
    if mimetype == "image/svg+xml":
        raise UnsupportedMedia("SVG is not supported; send JPEG, PNG, WebP, GIF, BMP or TIFF")
    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        return Inputs(images=[request.get_data()])  # curl --data-binary @photo.jpg
    if not mimetype and not request.content_length:
        raise InvalidInput(_NOTHING_SENT, code="no_input")
    raise UnsupportedMedia(f"Content-Type {mimetype or '(none)'} is not supported; send "
                           "multipart/form-data (-F image=@photo.jpg) or application/json")


_NOTHING_SENT = ("no input: send image files as 'image' fields and/or texts as 'text' fields "
                 "(multipart), or JSON {\"images\": [base64, ...], \"texts\": [...]}")


def _from_form(option_fields: tuple[str, ...]) -> Inputs:
    inputs = Inputs()
    for name in request.files:
        files = request.files.getlist(name)
        if name in IMAGE_FIELDS:
            for upload in files:
                if upload.mimetype == "image/svg+xml":
                    raise UnsupportedMedia("SVG is not supported; send JPEG, PNG, WebP, GIF, BMP or TIFF")
                inputs.images.append(upload_bytes(upload))
        elif name in TEXT_FIELDS:  # -F text=@caption.txt
            for upload in files:
                inputs.texts.append(_utf8(upload_bytes(upload), name))
        else:
            raise InvalidInput(f"unexpected file field '{name}': send images as 'image' "
                               "(repeat the field for several)", code="unknown_field")
    for name in request.form:
        values = request.form.getlist(name)
        if name in TEXT_FIELDS:
            inputs.texts.extend(values)
        elif name in option_fields:
            inputs.options.setdefault(name, []).extend(values)
        elif name in IMAGE_FIELDS:
            raise InvalidInput(f"'{name}' must be a file upload (-F {name}=@photo.jpg), not a text "
                               "field", code="invalid_field")
        else:
            expected = ", ".join(("image", "text") + option_fields)
            raise InvalidInput(f"unexpected field '{name}'; expected {expected}", code="unknown_field")
    return inputs


def _from_json(option_fields: tuple[str, ...]) -> Inputs:
    body = read_json_body()
    if not isinstance(body, dict):
        raise InvalidInput("the JSON body must be an object", code="invalid_json")
    inputs = Inputs()
    for key, value in body.items():
        if key in IMAGE_FIELDS:
            for n, item in enumerate(_as_list(value, key)):
                if not isinstance(item, str):
                    raise InvalidInput(f"{key}[{n}] must be a base64 string or data: URI", code="invalid_field")
                inputs.images.append(decode_base64_image(item, f"{key}[{n}]"))
        elif key in TEXT_FIELDS:
            for n, item in enumerate(_as_list(value, key)):
                if not isinstance(item, str):
                    raise InvalidInput(f"{key}[{n}] must be a string", code="invalid_field")
                inputs.texts.append(item)
        elif key in option_fields:
            inputs.options[key] = _as_list(value, key) if key.endswith("s") else [value]
        else:
            expected = ", ".join(("images", "texts") + option_fields)
            raise InvalidInput(f"unexpected key '{key}'; expected {expected}", code="unknown_field")
    return inputs


def _as_list(value, key: str) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [value]
    raise InvalidInput(f"'{key}' must be a list", code="invalid_field")


def _utf8(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"'{name}' is not UTF-8 text", code="invalid_text") from None


def decode_base64_image(value: str, where: str) -> bytes:
    """Plain or URL-safe base64, or a ``data:image/...;base64,`` URI -> bytes."""
    payload = value.strip()
    if payload.startswith(("http://", "https://")):
        raise InvalidInput(f"{where}: URLs are not fetched (that would let callers make this service "
                           "request arbitrary addresses); send the image bytes as base64", code="url_not_supported")
    if payload.startswith("data:"):
        header, comma, payload = payload.partition(",")
        if not comma or ";base64" not in header:
            raise InvalidInput(f"{where}: data URIs must be base64 (data:image/png;base64,...)", code="invalid_base64")
        if header[5:].split(";")[0].strip().lower() == "image/svg+xml":
            raise UnsupportedMedia(f"{where}: SVG is not supported; send JPEG, PNG, WebP, GIF, BMP or TIFF")
    payload = _WHITESPACE.sub("", payload).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where} is not valid base64", code="invalid_base64") from None


def check_texts(texts: list[str]) -> None:
    """Every text must have non-whitespace content."""
    for n, text in enumerate(texts):
        if not text.strip():
            raise InvalidInput(f"text {n} is empty", code="empty_text")


def check_count(inputs: Inputs, limit: int) -> None:
    """At least one input, at most ``limit`` (MAX_INPUTS)."""
    total = len(inputs.images) + len(inputs.texts)
    if total == 0:
        raise InvalidInput(_NOTHING_SENT, code="no_input")
    if total > limit:
        raise PayloadTooLarge(f"{total} inputs in one request; the limit is {limit} (MAX_INPUTS)",
                              code="too_many_inputs")
