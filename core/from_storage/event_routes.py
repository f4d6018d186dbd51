"""POST /events/pubsub and /events/storage: unwrap the event, read the object, run the app's handler, write.

The app supplies one ``EventHandler``: object bytes + options -> result files (``{"json": (bytes,
content type), ...}``); it calls the app's service like any other entry point. This module owns
what every event needs:

- results go to ``<output>/<key>@<generation>.<ext>`` (key: ``bucket/object`` for gs://, the path
  below EVENTS_INPUT_ROOT for file://), the ``.json`` written last, so it marks a finished result;
- idempotent: a ``.json`` or ``.error.json`` for that generation already there -> nothing recomputed;
- objects under the output prefix are ignored (a result must not trigger its own event);
- permanent failures (bad media, missing object, too large, malformed message) write
  ``<key>@<generation>.error.json`` (or ``_failed/<message id>.error.json``) and answer 200, so
  Pub/Sub does not redeliver them forever; transient ones (model busy, storage 5xx) answer
  429/503/504 and Pub/Sub or Eventarc retries;
- 2xx only once the result or failure record is written.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable

from flask import Blueprint, Flask, current_app, jsonify, request

from core import request_context
from core.deferred.durable import published_job
from core.errors import InvalidInput, NotConfigured, ServiceError
from core.from_storage import storage
from core.from_storage.batch_results import RESULT, write_result_files
from core.from_storage.events import Ignored, ObjectEvent, PoisonEvent, event_from_cloudevent, event_from_request
from core.settings import CoreSettings
from core.web.json_body import app_bounds, read_json_body
from core.web.logs import context_fields
from core.web.openapi import json_content, operation

log = logging.getLogger("core.from_storage.events")

# (object bytes, options, {"input", "generation"}) -> {extension: (bytes, content type)}; "json" required.
EventHandler = Callable[[bytes, dict, dict], "dict[str, tuple[bytes, str]]"]
EVENT_SCHEMA = {"type": "object", "description": "A Pub/Sub push envelope, a CloudEvent, or a job "
                                                 '{"input": "gs://...", "output": ..., options}.'}
EVENT_ANSWER = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
FAILURE = "error.json"


def is_permanent(err: ServiceError) -> bool:
    """A 4xx other than 408/429 will fail the same way on every retry; 429/5xx may not."""
    return 400 <= err.status < 500 and err.status not in (408, 429)


def install_events(app: Flask, handler: EventHandler, namespace: str) -> None:
    """Register the event routes with the app's handler; results go below <output>/<namespace>/.

    The namespace ("clip", "whisper") keeps two services that share an EVENTS_OUTPUT (and get the
    same bucket's notifications) apart: the worker's "not audio" record for a photo must not read
    as the CLIP server's finished result for it, nor the other way round.
    """
    bp = Blueprint("events", __name__)

    @bp.post("/events/pubsub")
    @operation("A Pub/Sub push (storage notification or JSON job), or a Cloud Tasks JSON job",
               request=json_content(EVENT_SCHEMA), responses={200: ("Done, skipped, ignored or failed for good "
                                                                    "(acknowledged).", json_content(EVENT_ANSWER))},
               errors=(400, 413, 503, 504), tags=["events"], offered=pubsub_offered)
    def pubsub():
        """A Pub/Sub push (storage notification or JSON job), or a bare JSON job (Cloud Tasks)."""
        jobs = current_app.extensions.get("async_jobs")
        durable = durable_jobs(current_app)  # JOB_TOPIC: callback jobs arrive here too
        if not durable:
            _events_settings()  # 404 before reading a body when events are not configured
        # Any Content-Type: a Cloud Tasks task without a Content-Type header still carries JSON.
        body = read_json_body(malformed=("invalid_event", "send a JSON body: a Pub/Sub push envelope or a job"))
        if durable:
            job = published_job(body)
            if job is not None:  # a durable callback job (core/deferred/durable.py)
                return jsonify(jobs.run_published(*job))
            _events_settings()
        bounds = app_bounds()
        return _answer(lambda: event_from_request(body, bounds), handler, _message_id(body), namespace)

    @bp.post("/events/storage")
    @operation("An Eventarc CloudEvent google.cloud.storage.object.v1.finalized (binary or structured mode)",
               request=json_content(EVENT_SCHEMA), responses={200: ("Done, skipped, ignored or failed for good "
                                                                    "(acknowledged).", json_content(EVENT_ANSWER))},
               errors=(400, 413, 503, 504), tags=["events"], offered=events_configured)
    def eventarc():
        """An Eventarc CloudEvent for a Cloud Storage object (binary or structured mode)."""
        _events_settings()  # 404 before reading a body when events are not configured
        bounds = app_bounds()
        return _answer(lambda: event_from_cloudevent(request.headers, request.get_data(), bounds), handler,
                       request.headers.get("ce-id", ""), namespace)

    app.register_blueprint(bp)


def _message_id(body) -> str:
    message = body.get("message") if isinstance(body, dict) else None
    return str(message.get("messageId") or "") if isinstance(message, dict) else ""


def events_configured(app: Flask) -> bool:
    """Whether the app offers the event routes (EVENTS_OUTPUT set); /openapi.json lists them only then."""
    return bool(app.extensions["settings"].events_output)


def durable_jobs(app: Flask) -> bool:
    """Whether callback jobs go through Pub/Sub (JOB_TOPIC): their pushes arrive at /events/pubsub."""
    jobs = app.extensions.get("async_jobs")
    return jobs is not None and jobs.publisher is not None


def pubsub_offered(app: Flask) -> bool:
    """/events/pubsub serves events (EVENTS_OUTPUT) or durable callback jobs (JOB_TOPIC)."""
    return events_configured(app) or durable_jobs(app)


def _events_settings() -> CoreSettings:
    """The app's settings; refused when events are not configured (before the body is read)."""
    settings: CoreSettings = current_app.extensions["settings"]
    if not events_configured(current_app):
        # A 404 as for any route this deployment does not offer, with a code and message that say
        # what to set; not NotReady's 503 "retry later": nothing changes until EVENTS_OUTPUT does.
        raise NotConfigured("events are not configured on this service: set EVENTS_OUTPUT to a directory or "
                            "gs:// prefix", code="events_not_configured")
    return settings


def _answer(parse: Callable[[], ObjectEvent], handler: EventHandler, event_id: str, namespace: str):
    # Its own request context (door "event") inside the HTTP request that carried it: the event's
    # inputs are counted as the event door's, and its log line carries its batch sizes.
    with request_context.opened("event") as context:
        return _run_event(parse, handler, event_id, namespace, context)


def _run_event(parse: Callable[[], ObjectEvent], handler: EventHandler, event_id: str, namespace: str,
               context: request_context.RequestContext):
    settings: CoreSettings = current_app.extensions["settings"]
    started = time.perf_counter()
    try:
        event = parse()
    except Ignored as ignored:
        return _done({"status": "ignored", "reason": ignored.reason}, event_id, started, context)
    except PoisonEvent as err:
        return _done(_fail(_failed_record(settings, event_id, namespace), err, {"event_id": event_id}), event_id,
                     started, context)
    try:
        body = process(event, handler, settings, namespace)
    except ServiceError as err:  # transient: the non-2xx answer makes Pub/Sub / Eventarc / Cloud Tasks retry
        log.warning("event %s retry: %s", event.event_id, err.message, extra={"event": {
            "event_id": event.event_id, "status": "retry", "source": event.source, "input": event.input,
            "error_code": err.code, "seconds": round(time.perf_counter() - started, 3)}})
        raise
    return _done(body, event.event_id, started, context, event)


def _done(body: dict, event_id: str, started: float, context: request_context.RequestContext,
          event: ObjectEvent | None = None):
    fields = {"event_id": event_id, "status": body["status"], "seconds": round(time.perf_counter() - started, 3)}
    if event is not None:
        fields.update(source=event.source, input=event.input, generation=body.get("generation"))
    if body.get("error"):
        fields["error_code"] = body["error"]["code"]
    fields.update(context_fields(context))
    log.info("event %s %s", event_id, body["status"], extra={"event": fields})
    return jsonify(body), 200


def _failed_record(settings: CoreSettings, event_id: str, namespace: str) -> str:
    """Where a failure with no object generation to name it goes: <namespace>/_failed/<message id>.error.json."""
    # A bare job (Cloud Tasks, curl) has no message id: a random one keeps records apart.
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in event_id)[:200] or f"job-{uuid.uuid4().hex}"
    return storage.join(settings.events_output, namespace, "_failed", f"{name}.{FAILURE}")


def process(event: ObjectEvent, handler: EventHandler, settings: CoreSettings, namespace: str) -> dict:
    """Run one object event to a written result or failure record; transient errors propagate."""
    output = event.output or settings.events_output
    for prefix in {settings.events_output, output}:
        if storage.is_below(event.input, prefix):
            return {"status": "ignored", "reason": f"{event.input} is under the output prefix {prefix}"}
    try:
        source, key = _resolve_input(event.input, settings)
        _check_output(output, settings)
        _check_key(output, key)
    except ServiceError as err:
        return _fail(_failed_record(settings, event.event_id, namespace), err,
                     {"input": event.input, "event_id": event.event_id})
    if not storage.is_gcs(source) and storage.is_below(source, os.path.realpath(storage.local_path(output))):
        return {"status": "ignored", "reason": f"{event.input} resolves to a file under the output {output}"}
    generation = event.generation
    meta = {"input": event.input, "generation": generation}
    try:
        if generation is None:
            generation = storage.stat(source).generation
            meta["generation"] = generation
        base = storage.join(output, namespace, f"{key}@{generation}")
        for suffix, status in ((RESULT, "exists"), (FAILURE, "failed_before")):
            if storage.exists(f"{base}.{suffix}"):
                return {"status": "skipped", "reason": status, "generation": generation,
                        "result": f"{base}.{suffix}"}
        data = storage.read_bytes(source, int(settings.events_max_object_mb * 1024 * 1024), generation)
        files = handler(data, event.options, meta)
    except ServiceError as err:
        if not is_permanent(err):
            raise
        record = (f"{storage.join(output, namespace, f'{key}@{generation}')}.{FAILURE}" if generation
                  else _failed_record(settings, event.event_id, namespace))
        return {**_fail(record, err, {**meta, "event_id": event.event_id}), "generation": generation}
    # Create-only writes: a file left by an interrupted attempt is kept (same input, same result),
    # and the runtime account needs only objectCreator on the output, never delete/overwrite.
    written = write_result_files(base, files, if_absent=True)
    return {"status": "succeeded", "input": event.input, "generation": generation, "results": written}


def _fail(record: str, err: ServiceError, meta: dict) -> dict:
    """Write a failure record for a permanent error -> the 200 body that acknowledges it."""
    error = {"code": err.code, "message": err.message}
    document = {**meta, "status": "failed", "error": error,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    storage.write_bytes(record, json.dumps(document).encode(), "application/json", if_absent=True)
    return {"status": "failed", "error": error, "record": record}


def _resolve_input(uri: str, settings: CoreSettings) -> tuple[str, str]:
    """(location to read, result key) for an event input; refuses file:// outside EVENTS_INPUT_ROOT."""
    if storage.is_gcs(uri):
        bucket, name = storage.split_gcs(uri)
        if not name or name.endswith("/"):
            raise InvalidInput(f"{uri} names no object", code="invalid_input")
        return uri, f"{bucket}/{name}"
    if not settings.events_input_root:
        raise InvalidInput("file:// inputs are refused: EVENTS_INPUT_ROOT is not set", code="input_not_allowed")
    try:
        path = storage.local_path(uri)
    except ValueError as err:
        raise InvalidInput(str(err), code="invalid_input") from None
    root = os.path.realpath(settings.events_input_root)
    # realpath resolves '..' and every symlink: a link inside the root pointing outside it is refused,
    # and what we read is the resolved path, not the name the event gave.
    resolved = os.path.realpath(path)
    if not path.is_absolute() or not storage.is_below(resolved, root) or resolved == root:
        raise InvalidInput(f"{uri} is outside EVENTS_INPUT_ROOT", code="input_not_allowed")
    return resolved, os.path.relpath(resolved, root).replace(os.sep, "/")


def _check_key(output: str, key: str) -> None:
    """A gs:// object may be named '../../x': in a local output directory that must not climb out."""
    if storage.is_gcs(output):
        return  # object names are flat strings there; '..' is just characters
    base = os.path.abspath(storage.local_path(output))
    if not storage.is_below(os.path.abspath(os.path.join(base, key)), base) or key.startswith("/"):
        raise InvalidInput(f"object name {key!r} would leave the output directory", code="invalid_input")


def _check_output(output: str, settings: CoreSettings) -> None:
    """A job's own output may be gs:// or a directory below EVENTS_OUTPUT, never any local path."""
    if output == settings.events_output or storage.is_gcs(output):
        return
    base = settings.events_output
    if storage.is_gcs(base) or not storage.is_below(os.path.realpath(storage.local_path(output)),
                                                     os.path.realpath(storage.local_path(base))):
        raise InvalidInput(f"output {output} must be a gs:// prefix or a directory below EVENTS_OUTPUT",
                           code="output_not_allowed")
