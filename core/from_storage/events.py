"""Event parsing: a Pub/Sub push envelope or an Eventarc CloudEvent -> the object to process.

Three shapes arrive:

- a Pub/Sub push whose message is a Cloud Storage notification (attributes ``bucketId``,
  ``objectId``, ``eventType``, ``objectGeneration``);
- a Pub/Sub push (or a bare body, as Cloud Tasks and curl send it) whose data is a JSON job
  ``{"input": "gs://..." | "file:///...", "output": optional, ...the route's options}``;
- an Eventarc CloudEvent ``google.cloud.storage.object.v1.finalized``, binary or structured mode
  (or ``google.cloud.pubsub.topic.v1.messagePublished``, whose data is the push envelope above).

Each becomes an ``ObjectEvent``. Events about something else (a deletion, another type) raise
``Ignored``; a message that can never succeed raises ``PoisonEvent`` (acknowledge it, with a
failure record); a request that is not an event at all raises ``InvalidInput`` (400).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.errors import InvalidInput, ServiceError
from core.web.json_body import JsonBounds, check_json_bytes, loads_bounded

FINALIZED = "google.cloud.storage.object.v1.finalized"
# Eventarc with a Pub/Sub source wraps the same push envelope in a CloudEvent of this type.
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
NOTIFICATION_FINALIZE = "OBJECT_FINALIZE"
# The keys of a JSON event that name locations; every other key is an option for the handler.
LOCATION_KEYS = ("input", "output")


class Ignored(Exception):
    """A well-formed event this service has nothing to do for; acknowledge it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class PoisonEvent(InvalidInput):
    """A message that will never succeed (bad data, bad job); record it and acknowledge it."""

    code = "invalid_event"


@dataclass(frozen=True)
class ObjectEvent:
    """One object to process: where it is, which generation, where results go, with which options."""

    input: str  # gs://bucket/name, or file:///... for local jobs
    generation: str | None  # None: read it from storage (jobs name no generation)
    output: str | None  # None: EVENTS_OUTPUT
    options: dict = field(default_factory=dict)
    source: str = "pubsub"  # pubsub-notification | pubsub-job | eventarc
    event_id: str = ""


@dataclass(frozen=True)
class PushMessage:
    """The message of a Pub/Sub push request."""

    message_id: str
    data: bytes
    attributes: dict
    subscription: str | None


def parse_push(body) -> PushMessage:
    """A Pub/Sub push envelope (parsed JSON) -> its message; InvalidInput if it is not one."""
    if not isinstance(body, dict):
        raise InvalidInput("expected a JSON object: a Pub/Sub push envelope or a job", code="invalid_event")
    message = body.get("message")
    if not isinstance(message, dict):
        raise InvalidInput("not a Pub/Sub push envelope: no 'message' object", code="invalid_event")
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise InvalidInput("message.attributes must be an object", code="invalid_event")
    raw = message.get("data") or ""
    try:
        data = base64.b64decode(raw, validate=True) if raw else b""
    except (binascii.Error, ValueError, TypeError):
        raise PoisonEvent(f"message {message_id}: data is not base64") from None
    return PushMessage(message_id, data, {str(k): str(v) for k, v in attributes.items()},
                       body.get("subscription"))


def event_from_push(message: PushMessage, bounds: JsonBounds) -> ObjectEvent:
    """A push message -> the object event (a storage notification or a JSON job)."""
    attributes = message.attributes
    if "bucketId" in attributes or "objectId" in attributes:
        event_type = attributes.get("eventType", "")
        if event_type != NOTIFICATION_FINALIZE:
            raise Ignored(f"storage notification {event_type or '(no eventType)'}: only {NOTIFICATION_FINALIZE} "
                          "is processed")
        bucket, name = attributes.get("bucketId", ""), attributes.get("objectId", "")
        if not bucket or not name:
            raise PoisonEvent("storage notification without bucketId and objectId")
        return ObjectEvent(f"gs://{bucket}/{name}", attributes.get("objectGeneration") or None, None,
                           source="pubsub-notification", event_id=message.message_id)
    try:
        fields = loads_bounded(message.data, bounds)
    except ServiceError as err:  # malformed, too deep or too large: it will never succeed
        raise PoisonEvent(f"message {message.message_id}: data is neither a storage notification nor a "
                          f"JSON job {{\"input\": \"gs://...\"}} ({err.message})") from None
    return event_from_json(fields, source="pubsub-job", event_id=message.message_id)


def event_from_json(fields, *, source: str = "job", event_id: str = "") -> ObjectEvent:
    """A JSON job (a Pub/Sub message's data, or a bare body) ``{"input", "output"?, ...options}``
    -> the object event; PoisonEvent if malformed."""
    if not isinstance(fields, dict):
        raise PoisonEvent("a job must be a JSON object {\"input\": \"gs://bucket/name\", ...}")
    source_uri = fields.get("input")
    if not isinstance(source_uri, str) or not source_uri.startswith(("gs://", "file://")):
        raise PoisonEvent("job input must be a gs://bucket/name or file:///path string", code="invalid_input")
    output = fields.get("output")
    if output is not None and (not isinstance(output, str) or not output.strip()):
        raise PoisonEvent("job output must be a gs:// prefix or a local directory", code="invalid_output")
    options = {key: value for key, value in fields.items() if key not in LOCATION_KEYS}
    return ObjectEvent(source_uri, None, output, options, source=source, event_id=event_id)


def event_from_request(body, bounds: JsonBounds) -> ObjectEvent:
    """What /events/pubsub receives: a push envelope, or a bare JSON job (Cloud Tasks, curl)."""
    if isinstance(body, dict) and "message" not in body and "input" in body:
        return event_from_json(body, source="job")
    return event_from_push(parse_push(body), bounds)


def event_from_cloudevent(headers: Mapping[str, str], body: bytes,
                          bounds: JsonBounds) -> ObjectEvent:
    """An Eventarc CloudEvent (binary or structured mode) -> the object event."""
    from cloudevents.v1 import exceptions as ce_errors
    from cloudevents.v1.http import from_http

    content_type = next((value for name, value in headers.items() if name.lower() == "content-type"), "")
    if not content_type or "json" in content_type.lower():
        check_json_bytes(body, bounds)  # from_http parses it with json.loads: bound it first
    try:
        event = from_http(dict(headers), body)
    except (ce_errors.GenericException, ValueError) as err:  # ValueError: a body that is not UTF-8 (the fuzz)
        raise InvalidInput(f"not a CloudEvent: {err}", code="invalid_event") from None
    event_type = event["type"]
    if event_type not in (FINALIZED, PUBSUB_PUBLISHED):
        raise Ignored(f"CloudEvent type {event_type}: only {FINALIZED} and {PUBSUB_PUBLISHED} are processed")
    data = event.data
    if isinstance(data, (bytes, str)):
        data = loads_bounded(data, bounds, malformed=("invalid_event", "CloudEvent data is not JSON"))
    if event_type == PUBSUB_PUBLISHED:
        return event_from_push(parse_push(data), bounds)
    data = data if isinstance(data, dict) else {}
    attributes = event.get_attributes()
    # The object resource names bucket and object; source and subject say the same and serve as
    # the fallback (//storage.googleapis.com/projects/_/buckets/B, objects/NAME).
    bucket = data.get("bucket") or str(attributes.get("source", "")).rpartition("/buckets/")[2]
    subject = str(attributes.get("subject") or "")
    name = data.get("name") or (subject[len("objects/"):] if subject.startswith("objects/") else "")
    if not bucket or not name:
        raise InvalidInput("CloudEvent names no bucket and object", code="invalid_event")
    generation = data.get("generation")
    return ObjectEvent(f"gs://{bucket}/{name}", str(generation) if generation else None, None,
                       source="eventarc", event_id=str(attributes.get("id", "")))
