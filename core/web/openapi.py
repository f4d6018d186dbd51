"""One OpenAPI 3.1 contract per app, built from the routes' own declarations.

Each view declares its request and response schemas next to its definition with ``@operation``;
``build_document`` walks the app's url_map, so the document lists exactly the routes Flask serves
(a route without a declaration still appears, with a generic body, and a test names it).

The document says what this deployment enforces, no less (a fuzzer checks it: tests/openapi_fuzz.py):
parts that depend on the app (``setting_value``: MAX_INPUTS as ``maxItems``; ``only_if``: the
``callback_url`` field only where CALLBACK_SECRET turns callbacks on; ``FromApp``: the loaded
model's dimension) are resolved each time the document is served, and an operation the
deployment does not offer (``offered``) is left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from flask import Flask, current_app, jsonify

from core.web.auth import OPEN_PATHS

OPENAPI_VERSION = "3.1.0"
IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})  # Flask adds these to every rule by itself
# Statuses any route can answer: API key, rate limit, request body limit.
COMMON_ERRORS = (401, 429)
ERROR_DESCRIPTIONS = {
    400: "Bad input: the message says what to send instead.",
    401: "Missing or wrong API key (only when API_KEY is set).",
    404: "No such resource.",
    413: "Too large: the body, or an input over one of the service's limits (the message names it).",
    415: "Unsupported media type.",
    429: "Inference queue full (overloaded) or RATE_LIMIT reached; see Retry-After.",
    500: "Inference failed for this request's batch; the service keeps serving.",
    503: "Model not ready (loading or broken); see Retry-After.",
    504: "Waited longer than REQUEST_TIMEOUT_S for the model.",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string", "description": "Stable machine-readable code."},
                       "message": {"type": "string", "description": "What went wrong and what to send."},
                       "type": {"type": "string"}},
    }},
}
MODEL_LIST_SCHEMA = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
        "type": "object", "required": ["id", "object", "created", "owned_by"],
        "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                       "owned_by": {"type": "string"}}}}},
}  # plus each service's own model fields (add_model_list's ``properties``)
HEALTH_SCHEMA = {
    "type": "object",
    "required": ["status", "service"],
    "properties": {"status": {"enum": ["ok", "unavailable"]}, "service": {"type": "string"},
                   "reason": {"type": "string"}},
}  # plus the model, device, batching and stats details, and each service's own (Declaration.health_properties)
_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
OMIT = object()  # what a FromSettings resolves to for "leave this key or item out"


@dataclass(frozen=True)
class FromApp:
    """A part of a schema that depends on the app, resolved when the document is built."""

    resolve: Callable[[Flask], object]  # app -> the value, or OMIT


def setting_value(name: str) -> FromApp:
    """The app's setting ``name`` (``{"maxItems": setting_value("max_inputs")}``)."""
    return FromApp(lambda app: getattr(app.extensions["settings"], name))


def only_if(enabled: Callable[[object], bool], value) -> FromApp:
    """``value`` where ``enabled(settings)``; otherwise the key or list item is left out."""
    return FromApp(lambda app: value if enabled(app.extensions["settings"]) else OMIT)


def callbacks_enabled(settings) -> bool:
    """callback_url is accepted only where CALLBACK_SECRET is set (400 callbacks_disabled otherwise)."""
    return bool(settings.callback_secret)


def callback_field(schema: dict, *, nullable: bool = False, lists: bool = False) -> FromApp:
    """The ``callback_url`` property: ``schema`` where callbacks are on, else left out. ``nullable``
    (JSON bodies): null too, "no callback"; ``lists``: a list too, of which only the last item counts
    (what no schema can say: any list is allowed here, and one ending in a refused URL gets a 400)."""

    def field(app: Flask):
        on = callbacks_enabled(app.extensions["settings"])
        if not nullable:
            return schema if on else OMIT
        one = {"anyOf": [schema, {"type": "null"}]} if on else {"type": "null"}
        shapes = [one, {"type": "array", "description": "The last item counts."}] if lists else [one]
        return {"anyOf": shapes,
                "description": schema["description"] if on else "Callbacks are off (CALLBACK_SECRET unset)."}

    return FromApp(field)


def resolved(value, app: Flask):
    """``value`` with every FromApp in it resolved against ``app`` (OMIT ones dropped)."""
    if isinstance(value, FromApp):
        return resolved(value.resolve(app), app)
    if isinstance(value, Mapping):
        items = ((key, resolved(item, app)) for key, item in value.items())
        return {key: item for key, item in items if item is not OMIT}
    if isinstance(value, list | tuple):
        return [item for item in (resolved(item, app) for item in value) if item is not OMIT]
    return value


def operation(summary: str, *, request: Mapping[str, dict] | None = None, request_required: bool = True,
              responses: Mapping[int, tuple[str, Mapping[str, dict] | None]],
              errors: Iterable[int] = (), parameters: Iterable[dict] = (), description: str | None = None,
              tags: Iterable[str] = (), offered: Callable[[Flask], bool] | None = None,
              encoding: Mapping[str, dict] | None = None) -> Callable:
    """Declare a view's contract: request bodies and responses by media type, error statuses.

    ``offered(app)`` False: the document leaves the operation out (a feature this deployment has
    not configured, or its model cannot do), and the route answers a 4xx that says why (the event
    routes a 404). ``encoding``: the multipart body's per-part ``encoding`` (the media types an
    upload part takes).
    """

    def declare(view: Callable) -> Callable:
        view.openapi = {"summary": summary, "description": description or (view.__doc__ or "").strip(),
                        "request": request, "request_required": request_required, "responses": responses,
                        "errors": tuple(errors), "parameters": list(parameters), "tags": list(tags),
                        "offered": offered, "encoding": encoding}
        return view

    return declare


def json_content(schema: dict) -> dict[str, dict]:
    """``{"application/json": schema}`` for ``responses``/``request``."""
    return {"application/json": schema}


def query(name: str, schema: dict, description: str) -> dict:
    """A query parameter declaration."""
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def routes(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, lower-case method) for every rule the app offers, without HEAD/OPTIONS."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or not _offered(app, app.view_functions[rule.endpoint]):
            continue
        for method in (rule.methods or set()) - IGNORED_METHODS:
            found.add((openapi_path(rule.rule), method.lower()))
    return found


def openapi_path(flask_rule: str) -> str:
    """``/jobs/<int:job_id>`` -> ``/jobs/{job_id}``."""
    return _PARAMETER.sub(r"{\1}", flask_rule)


def _offered(app: Flask, view: Callable) -> bool:
    offered = getattr(view, "openapi", {}).get("offered")
    return offered is None or offered(app)


def undeclared(app: Flask) -> list[str]:
    """Rules whose view has no ``@operation`` (each should declare its contract)."""
    return sorted(rule.rule for rule in app.url_map.iter_rules()
                  if rule.endpoint != "static" and not hasattr(app.view_functions[rule.endpoint], "openapi"))


def build_document(app: Flask, title: str, description: str, version: str = "1.0.0") -> dict:
    """The OpenAPI 3.1 document of ``app``, from its url_map and each view's declaration."""
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        if rule.endpoint == "static" or not _offered(app, view):
            continue
        declared = getattr(view, "openapi", None)
        path = openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - IGNORED_METHODS):
            item = _operation(declared, view, rule.rule in OPEN_PATHS)
            item["operationId"] = re.sub(r"[^A-Za-z0-9]+", "_", f"{method.lower()}{path}").strip("_")
            path_params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                           for name in _PARAMETER.findall(rule.rule)]
            if path_params:
                item["parameters"] = path_params + item.get("parameters", [])
            paths.setdefault(path, {})[method.lower()] = item
    return resolved({
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "responses": {str(status): _error_response(status) for status in ERROR_DESCRIPTIONS},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "API_KEY as a bearer token."},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        # The key is optional (API_KEY unset = open), hence the empty alternative.
        "security": [{"bearer": []}, {"apiKeyHeader": []}, {}],
    }, app)


def _error_response(status: int) -> dict:
    return {"description": ERROR_DESCRIPTIONS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation(declared: dict | None, view: Callable, public: bool) -> dict:
    if declared is None:  # an undeclared route still appears; the contract test names it
        summary = ((view.__doc__ or view.__name__).strip().splitlines() or [view.__name__])[0]
        declared = {"summary": summary, "description": "", "request": None, "request_required": False,
                    "responses": {200: ("Success.", None)}, "errors": (), "parameters": [], "tags": []}
    item: dict = {"summary": declared["summary"]}
    if declared["description"] and declared["description"] != declared["summary"]:
        item["description"] = declared["description"]
    if declared["tags"]:
        item["tags"] = declared["tags"]
    if declared["parameters"]:
        item["parameters"] = list(declared["parameters"])
    if declared["request"]:
        content = {media: {"schema": schema} for media, schema in declared["request"].items()}
        if declared.get("encoding"):
            content["multipart/form-data"]["encoding"] = dict(declared["encoding"])
        item["requestBody"] = {"required": declared["request_required"], "content": content}
    responses: dict = {}
    for status, (text, content) in declared["responses"].items():
        responses[str(status)] = {"description": text}
        if content:
            responses[str(status)]["content"] = {media: {"schema": schema} for media, schema in content.items()}
    errors = set(declared["errors"]) | (set() if public else set(COMMON_ERRORS))
    for status in sorted(errors):
        responses.setdefault(str(status), {"$ref": f"#/components/responses/{status}"})
    # Anything else (404/405 from routing, a body over MAX_REQUEST_MB) has the same error body.
    responses["default"] = {"description": "Any other error.",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    item["responses"] = responses
    if public:
        item["security"] = []
    return item


def install_openapi(app: Flask, title: str, description: str) -> None:
    """Serve the app's document at GET /openapi.json (behind API_KEY like every route but /health)."""

    @app.get("/openapi.json")
    @operation("This service's OpenAPI 3.1 document", responses={
        200: ("The document.", json_content({"type": "object", "required": ["openapi", "paths"]}))})
    def openapi_document():
        """The OpenAPI 3.1 document, built from the routes themselves."""
        # Built each time (a few routes, microseconds): parts of it follow the app (the model's
        # dimension once loaded), and every blueprint is registered by the first request.
        return jsonify(build_document(current_app._get_current_object(), title, description))
