"""Schemathesis hooks (schemathesis.toml): real images and audio for the upload parts of the documents.

The documents say which media types an upload part takes (multipart ``encoding`` contentType, and
the raw image bodies of /embed); these strategies make small, valid files of those types, so that
a schema-valid request is one the services can accept (positive_data_acceptance) and the fuzzer
reaches the model, not only the decoder's 400.
"""

from __future__ import annotations

import base64
import io
import math
import struct

import schemathesis
from hypothesis import strategies as st
from PIL import Image


def _image(fmt: str, width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, fmt)
    return buffer.getvalue()


def _wav(seconds: float, hertz: int) -> bytes:
    """16 kHz mono 16-bit PCM of a tone."""
    rate, count = 16000, int(16000 * seconds)
    samples = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hertz * n / rate))) for n in range(count))
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(samples), b"WAVE", b"fmt ", 16, 1, 1, rate,
                         rate * 2, 2, 16, b"data", len(samples))
    return header + samples


_SIDES = st.integers(min_value=1, max_value=48)
_COLOURS = st.tuples(*[st.integers(0, 255)] * 3)
_IMAGES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF", "image/bmp": "BMP",
           "image/tiff": "TIFF"}
for _media, _fmt in _IMAGES.items():
    schemathesis.openapi.media_type(_media, st.builds(lambda w, h, c, fmt=_fmt: _image(fmt, w, h, c),
                                                      _SIDES, _SIDES, _COLOURS))
# format "byte" (base64) is only ever an image in these documents (the JSON image fields).
schemathesis.openapi.format("byte", st.builds(lambda w, h, c: base64.b64encode(_image("PNG", w, h, c)).decode(),
                                              _SIDES, _SIDES, _COLOURS))
schemathesis.openapi.media_type("audio/wav", st.builds(_wav, st.sampled_from([0.5, 1.0, 2.0]),
                                                       st.integers(100, 2000)), aliases=("audio/x-wav",))
