"""How embedding vectors go on the wire: JSON floats, base64 float32, and the fast JSON encoder.

One place for both the native ``/embed`` and OpenAI-style ``encoding_format=base64`` so the two
cannot drift: little-endian float32 bytes, standard base64 (what the ``openai`` SDK decodes with
``np.frombuffer(base64.b64decode(s), dtype="float32")``).
"""

from __future__ import annotations

import base64

import numpy as np
import orjson

from core.errors import InvalidInput

ENCODING_FORMATS = ("float", "base64")


def vector(values: np.ndarray) -> list[float]:
    """One embedding as a JSON-ready list."""
    # 7 decimals keep unit vectors exact to ~1e-7 and make the JSON about half as long
    # (orjson's exact float32 output is ~19% longer and no faster: measured, see bench/feed_bench.py).
    return np.round(values.astype(np.float64), 7).tolist()


def float32_base64(values: np.ndarray) -> str:
    """One embedding as base64 of its little-endian float32 bytes (exact; half the 7-decimal JSON)."""
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def base64_float32(text: str) -> np.ndarray:
    """The inverse of ``float32_base64`` (clients and tests)."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def check_encoding_format(encoding_format: str | None) -> str:
    """The requested format, "float" when unset; 400 for anything else."""
    encoding_format = encoding_format or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise InvalidInput(f"encoding_format must be one of {', '.join(ENCODING_FORMATS)}, got {encoding_format!r}",
                           code="invalid_option")
    return encoding_format


def check_dimensions(dimensions, dim: int | None) -> None:
    """OpenAI's ``dimensions``: absent, or the model's own (None while the model loads: not checked)."""
    if dimensions is None or dim is None:
        return
    if isinstance(dimensions, bool) or dimensions != dim:
        raise InvalidInput(f"dimensions must be {dim} (the model's dimension) or omitted; this model cannot "
                           "shorten its vectors", code="invalid_option")


def encode_vector(values: np.ndarray, encoding_format: str) -> list[float] | str:
    """One embedding in the requested ``encoding_format`` ("float" or "base64")."""
    return float32_base64(values) if encoding_format == "base64" else vector(values)


def json_response(body: dict, status: int = 200):
    """A JSON response rendered by orjson (~13x faster than the json module on 512 floats)."""
    # Imported here, not at the top: the service imports this module, and only HTTP needs Flask.
    from flask import Response

    # OPT_SERIALIZE_NUMPY: a stray numpy scalar or array in a body renders instead of failing.
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                    mimetype="application/json")
