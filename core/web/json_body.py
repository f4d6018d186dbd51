"""The one reader of JSON request bodies: size, nesting depth and value count checked on the raw bytes.

Every door that takes JSON (the routes of both apps, ``/v1/*``, ``/events/*``, the data of a
Pub/Sub message, a JSON-list form field) reads it here, so a bound added once holds everywhere.

The bounds are checked by a scan of the raw bytes *before* the parser builds anything:

- depth: a body nested 50,000 levels deep made ``json.loads`` raise RecursionError (a 500 on
  ``/v1/embeddings`` and ``/events/pubsub``);
- values: a 25 MiB ``{"images": ["", "", ...]}`` (8.7 million empty strings) was parsed in full
  before the route counted its inputs: 8.6 s and +780 MiB of peak memory for a 413. The scan
  stops at the first comma over the limit, so such a body is refused in milliseconds.

The scan skips strings with one regular expression (C speed, whatever their length) and loops in
Python only over structural characters outside strings, and never over more of them than the
limits allow. For valid JSON it is exact; invalid JSON it lets through is the parser's to refuse.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from core.errors import InvalidInput, PayloadTooLarge

# A JSON string (escapes included), or one structural character outside strings.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)
_OPEN, _CLOSE, _COMMA, _QUOTE = frozenset(b"[{"), frozenset(b"]}"), ord(","), ord('"')
# Tokens a body of ``max_items`` values can hold: per value a string or two brackets and its
# comma, per member also its key; more means too many values (or not JSON), not worth scanning.
_TOKENS_PER_VALUE = 4


@dataclass(frozen=True)
class JsonBounds:
    """What one JSON body may hold: bytes, nesting depth, and values (commas) in all."""

    max_bytes: int
    max_depth: int
    max_items: int

    @classmethod
    def from_settings(cls, settings) -> JsonBounds:
        """MAX_REQUEST_MB, MAX_JSON_DEPTH and the app's ``max_json_items`` (its inputs per request)."""
        return cls(settings.max_request_bytes, settings.max_json_depth, settings.max_json_items)


def check_json_bytes(data: bytes, bounds: JsonBounds) -> None:
    """Refuse ``data`` when it is too large (413), nested too deep (400) or holds too many values (413)."""
    if len(data) > bounds.max_bytes:
        raise PayloadTooLarge(f"the JSON body is over {bounds.max_bytes / 1024 / 1024:g} MiB (MAX_REQUEST_MB)",
                              code="payload_too_large")
    depth = commas = tokens = 0
    token_budget = _TOKENS_PER_VALUE * (bounds.max_items + 1) + 2 * bounds.max_depth
    for match in _TOKEN.finditer(data):
        char = data[match.start()]
        if char == _QUOTE:
            pass
        elif char in _OPEN:
            depth += 1
            if depth > bounds.max_depth:
                raise InvalidInput(f"the JSON body is nested more than {bounds.max_depth} levels deep "
                                   "(MAX_JSON_DEPTH)", code="json_too_deep")
        elif char in _CLOSE:
            depth -= 1
        elif char == _COMMA:
            commas += 1
        tokens += 1
        if commas >= bounds.max_items or tokens > token_budget:
            raise PayloadTooLarge(f"the JSON body holds more than {bounds.max_items} values; one request takes "
                                  "at most that many inputs (MAX_INPUTS, MAX_LABELS)", code="too_many_inputs")


def loads_bounded(data: bytes | str, bounds: JsonBounds, malformed: tuple[str, str] | None = None):
    """Check ``data`` against ``bounds``, then parse it; malformed JSON is a 400, never a 500.

    ``malformed``: the (code, message) of that 400 where the caller names what it expected
    (``invalid_event``: "send a JSON body: ..."); ``invalid_json`` with the parser's words otherwise.
    Too deep or too large keeps its own code either way.
    """
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise _malformed(malformed, "malformed JSON: not UTF-8 text") from None
    check_json_bytes(data or b"", bounds)
    try:
        return json.loads(data or b"")
    except RecursionError:  # unreachable after the scan; kept so a parser change cannot make it a 500
        raise InvalidInput("the JSON body is nested too deeply (MAX_JSON_DEPTH)", code="json_too_deep") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise _malformed(malformed, f"malformed JSON: {err}") from None


def _malformed(malformed: tuple[str, str] | None, parser_message: str) -> InvalidInput:
    code, message = malformed or ("invalid_json", parser_message)
    return InvalidInput(message, code=code)


def app_bounds() -> JsonBounds:
    """The current app's bounds (MAX_REQUEST_MB, MAX_JSON_DEPTH, its inputs per request)."""
    from flask import current_app

    return JsonBounds.from_settings(current_app.extensions["settings"])


def read_json_body(malformed: tuple[str, str] | None = None):
    """The current request's body as JSON, bounded by the app's settings (any Content-Type)."""
    from flask import request

    raw = request.get_data(cache=False)
    body = loads_bounded(raw, app_bounds(), malformed)
    if isinstance(body, dict) and "callback_url" in body:
        # A callback job spools its request before the 202 (core/deferred/spool.py): keep these bytes.
        request.environ["inference.raw_body"] = raw
    return body


def read_json_object(known_keys: tuple[str, ...], example: str) -> dict:
    """The request's JSON object body; 400 for another media type, a non-object or an unknown key.

    ``example`` is a minimal valid body, quoted in the error a client gets for a wrong media type.
    """
    from flask import request

    if request.mimetype != "application/json":
        raise InvalidInput(f"send a JSON body: {example}", code="invalid_json")
    body = read_json_body()
    if not isinstance(body, dict):
        raise InvalidInput("the JSON body must be an object", code="invalid_json")
    unknown = sorted(set(body) - set(known_keys))
    if unknown:
        raise InvalidInput(f"unexpected key '{unknown[0]}'; expected {', '.join(known_keys)}", code="unknown_field")
    return body


def choice(body: dict, key: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    """``body[key]`` when it is one of ``allowed`` (``default`` when absent); 400 otherwise."""
    value = body.get(key, default)
    if value is not None and value not in allowed:
        raise InvalidInput(f"{key} must be one of {', '.join(allowed)}", code="invalid_option")
    return value
