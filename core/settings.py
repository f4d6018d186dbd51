"""Typed, frozen settings read from the environment once at start-up and validated there.

Each field declares its environment variable, default and a one-line why with ``setting()``;
``from_env`` parses by the field's type, and ``settings_table`` renders docs/configuration.md's tables, so the
documentation cannot drift from the code. Both apps subclass ``CoreSettings``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T", bound="CoreSettings")
JOB_STORE_SCHEMES = ("file://", "memory://", "redis://", "rediss://", "gs://")


class SettingsError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


def setting(env: str, default: Any, doc: str, *, choices: tuple | None = None,
            minimum: float | None = None, secret: bool = False) -> Any:
    """Declare one setting: its env var, default, a one-line why and optional validation."""
    return field(default=default, metadata={
        "env": env, "doc": doc, "choices": choices, "minimum": minimum, "secret": secret})


def _parse(raw: str, kind: Any, env: str) -> Any:
    """Parse one raw env string into ``kind`` (int, float, bool, str, their Optionals, tuples)."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if raw.strip() == "" or raw.strip().lower() in ("none", "auto"):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(raw, inner, env)
    if origin is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw.strip())
        if kind is float:
            return float(raw.strip())
    except ValueError:
        raise SettingsError(f"{env}={raw!r} is not a valid {kind.__name__}") from None
    return raw


@dataclass(frozen=True)
class CoreSettings:
    """Settings both services share: HTTP, limits, batching, auth, logging."""

    port: int = setting("PORT", 8080, "TCP port to listen on (Cloud Run sets it).", minimum=1)
    web_threads: int = setting(
        "WEB_THREADS", 16,
        "gunicorn gthread threads per process = requests it handles at once; at least 2 x MAX_BATCH_SIZE "
        "so its batches fill (a batch in the model, the next forming; docs/deploy.md, Processes and concurrency).",
        minimum=1)
    web_workers: int | None = setting(
        "WEB_WORKERS", None,
        "gunicorn worker processes; each loads its own model. auto: 1 on CPU; with GPUs, one per GPU "
        "for the Whisper worker and one per vCPU (at most 8 per GPU) for the CLIP server, no more per GPU "
        "than fit in its memory (core/capacity.py).",
        minimum=1)
    graceful_timeout_s: float = setting(
        "GRACEFUL_TIMEOUT_S", 8.0,
        "Seconds to finish in-flight requests after SIGTERM; Cloud Run kills 10 s after SIGTERM.",
        minimum=0)
    models_dir: str = setting(
        "MODELS_DIR", "models", "Directory the bake command writes weights to and the service loads from.")
    max_batch_size: int | None = setting(
        "MAX_BATCH_SIZE", None, "Items per model call; auto picks a GPU or CPU default per service.",
        minimum=1)
    max_wait_ms: float = setting(
        "MAX_WAIT_MS", 10.0,
        "How long the first item of a batch waits for company; bounds the latency batching adds.",
        minimum=0)
    max_queue: int = setting(
        "MAX_QUEUE", 512, "Items waiting for the model before new requests get 429 + Retry-After.",
        minimum=1)
    request_timeout_s: float = setting(
        "REQUEST_TIMEOUT_S", 60.0, "An item still waiting for the model after this long gets 504.",
        minimum=0.001)
    max_request_mb: float = setting(
        "MAX_REQUEST_MB", 30.0,
        "Largest request body (413 above it); below Cloud Run's 32 MiB HTTP/1 request cap.", minimum=0.001)
    api_key: str | None = setting(
        "API_KEY", None,
        "When set, every route but /health and /livez needs 'X-API-Key: KEY' or 'Authorization: Bearer KEY'; "
        "several keys comma-separated (one per client, or old and new while rotating).",
        secret=True)
    rate_limit: str | None = setting(
        "RATE_LIMIT", None, "flask-limiter limits per client, e.g. '120/minute;2000/hour'; unset = off.")
    rate_limit_storage_uri: str = setting(
        "RATE_LIMIT_STORAGE_URI", "memory://",
        "Where rate-limit counters live; memory:// is per process, use redis://HOST:6379 across instances.")
    rate_limit_per_route: bool = setting(
        "RATE_LIMIT_PER_ROUTE", False,
        "Give each route its own RATE_LIMIT budget; off = one budget per client across all routes.")
    rate_limit_fail_closed: bool = setting(
        "RATE_LIMIT_FAIL_CLOSED", False,
        "When the rate-limit storage is unreachable, answer 503 instead of serving unlimited (logged and "
        "counted either way).")
    metrics_public: bool = setting(
        "METRICS_PUBLIC", False, "Serve GET /metrics without the API key (e.g. to a scraper on a private network).")
    trusted_proxies: int = setting(
        "TRUSTED_PROXIES", 1,
        "X-Forwarded-For hops to trust for the client address (Cloud Run's front end adds one).",
        minimum=0)
    log_level: str = setting(
        "LOG_LEVEL", "INFO", "Python log level of the JSON logs on stdout.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    callback_secret: str | None = setting(
        "CALLBACK_SECRET", None,
        "HMAC key that signs callback_url deliveries (X-Signature); unset = callback_url is refused "
        "(in production, from Secret Manager).", secret=True)
    callback_allowed_hosts: tuple[str, ...] = setting(
        "CALLBACK_ALLOWED_HOSTS", (),
        "Comma-separated host or host:port callbacks may reach over plain http or at non-public "
        "addresses (a private receiver, tests); every other callback needs https and a public address.")
    callback_timeout_s: float = setting(
        "CALLBACK_TIMEOUT_S", 10.0, "Connect + response timeout of one callback attempt.", minimum=0.1)
    callback_max_attempts: int = setting(
        "CALLBACK_MAX_ATTEMPTS", 8,
        "Attempts per callback; connection errors, 5xx, 408 and 429 are retried with backoff.", minimum=1)
    callback_max_age_s: float = setting(
        "CALLBACK_MAX_AGE_S", 3600.0, "A callback still failing this long after the job ended is given up.",
        minimum=0)
    callback_backoff_s: float = setting(
        "CALLBACK_BACKOFF_S", 2.0,
        "First retry delay; it doubles per attempt (jittered, at most 5 minutes, at least Retry-After).",
        minimum=0)
    job_ttl_s: float = setting(
        "JOB_TTL", 86400.0, "Seconds GET /jobs/<id> keeps a callback_url job's status and result.", minimum=1)
    job_store_uri: str = setting(
        "JOB_STORE_URI", "file:///tmp/inference-jobs",
        "Where callback_url job records live for GET /jobs/<id>: file:///DIR is shared by the processes "
        "of one instance; redis://HOST:6379 or gs://BUCKET/PREFIX by every instance; memory:// is per process.")
    job_lease_s: float = setting(
        "JOB_LEASE_S", 30.0,
        "A callback_url job whose process stopped renewing its lease this long ago is taken over and run "
        "again by another process; a client waits at most about 4/3 of this after a crash.", minimum=1)
    job_max_attempts: int = setting(
        "JOB_MAX_ATTEMPTS", 3,
        "Runs of one callback_url job across lost processes; then it fails with code worker_lost.", minimum=1)
    job_topic: str | None = setting(
        "JOB_TOPIC", None,
        "Durable mode: projects/P/topics/T; each accepted callback_url job is published there and run by "
        "the Pub/Sub push to /events/pubsub (needs a gs:// or redis:// JOB_STORE_URI); unset = off.")
    async_queue: int = setting(
        "ASYNC_QUEUE", 256, "callback_url jobs waiting to run before new ones get 429 + Retry-After.",
        minimum=1)
    async_workers: int = setting(
        "ASYNC_WORKERS", 4,
        "Threads running callback_url jobs; each feeds the same batcher as a request thread.", minimum=1)
    events_output: str | None = setting(
        "EVENTS_OUTPUT", None,
        "Where /events/* write results and failure records: a local directory or gs://bucket/prefix; "
        "unset = the event routes answer 404 events_not_configured and are not in /openapi.json.")
    events_input_root: str | None = setting(
        "EVENTS_INPUT_ROOT", None,
        "The only local directory file:// event inputs may be read from (local runs, tests); unset = "
        "file:// inputs are refused.")
    events_max_object_mb: float = setting(
        "EVENTS_MAX_OBJECT_MB", 200.0,
        "Largest object an event may read (checked before downloading); larger ones get a failure record.",
        minimum=0.001)
    decode_memory_budget_mb: float | None = setting(
        "DECODE_MEMORY_BUDGET_MB", None,
        "Decoded-input memory one worker process may hold at once (images, audio), estimated from "
        "headers; over it requests wait then get 429, one larger than all of it 413. auto = 25% of "
        "the container's memory limit (cgroup) / worker processes.", minimum=1)
    decode_memory_wait_s: float = setting(
        "DECODE_MEMORY_WAIT_S", 2.0,
        "How long a request waits for decode memory to free up before 429 + Retry-After.", minimum=0)
    max_json_depth: int = setting(
        "MAX_JSON_DEPTH", 32, "Nesting depth of a JSON request body (400 above it).", minimum=2)

    @classmethod
    def from_env(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
        """Build settings from ``environ`` (default ``os.environ``); keyword overrides win."""
        environ = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            env = f.metadata.get("env")
            if f.name in overrides:
                values[f.name] = overrides.pop(f.name)
            elif env and env in environ:
                values[f.name] = _parse(environ[env], hints[f.name], env)
        if overrides:
            raise TypeError(f"unknown settings: {', '.join(sorted(overrides))}")
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check ranges and choices; raise SettingsError naming the variable."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            env = f.metadata.get("env", f.name)
            minimum = f.metadata.get("minimum")
            choices = f.metadata.get("choices")
            if value is None:
                continue
            if minimum is not None and isinstance(value, (int, float)) and value < minimum:
                raise SettingsError(f"{env} must be >= {minimum}, got {value}")
            if choices and value not in choices:
                raise SettingsError(f"{env} must be one of {', '.join(map(str, choices))}, got {value!r}")
        if self.port > 65535:
            raise SettingsError(f"PORT must be <= 65535, got {self.port}")
        if self.rate_limit:
            from limits import parse_many

            try:
                parse_many(self.rate_limit)
            except ValueError as err:
                raise SettingsError(f"RATE_LIMIT={self.rate_limit!r} is not valid: {err}") from None
        if not self.job_store_uri.startswith(JOB_STORE_SCHEMES) or self.job_store_uri.rstrip("/") == "gs:":
            raise SettingsError(f"JOB_STORE_URI={self.job_store_uri!r} must be file:///DIR, redis://HOST:PORT, "
                                "gs://BUCKET/PREFIX or memory://")
        if self.job_topic and (not self.job_store_uri.startswith(("gs://", "redis://", "rediss://"))
                               or not re.fullmatch(r"projects/[^/]+/topics/[^/]+", self.job_topic)):
            raise SettingsError(f"JOB_TOPIC={self.job_topic!r} must be projects/PROJECT/topics/TOPIC, with a "
                                "JOB_STORE_URI every instance reaches (gs://BUCKET/PREFIX or redis://)")
        if self.events_output and self.events_output.startswith("gs://") and not self.events_output[5:].strip("/"):
            raise SettingsError("EVENTS_OUTPUT needs a bucket: gs://BUCKET or gs://BUCKET/prefix")

        self.check_consistency()

    def check_consistency(self) -> None:
        """Refuse settings that contradict each other (a hook: services add their own pairs)."""
        if self.max_batch_size is not None and self.max_batch_size > self.max_queue:
            raise SettingsError(f"MAX_BATCH_SIZE={self.max_batch_size} is larger than MAX_QUEUE={self.max_queue}: "
                                "a batch could never fill; raise MAX_QUEUE or lower MAX_BATCH_SIZE")

    @property
    def max_request_bytes(self) -> int:
        """MAX_REQUEST_MB in bytes (MiB)."""
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def max_json_items(self) -> int:
        """Values (commas) one JSON body may hold, counted before parsing; an event needs a few dozen."""
        return 1024

    def public_dict(self) -> dict:
        """The settings with secrets masked, for logs."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = ("***" if value else None) if f.metadata.get("secret") else value
        return out


def override(name: str, default: Any, doc: str | None = None) -> Any:
    """Redeclare a CoreSettings field in a service: same variable and checks, its own default (and why)."""
    base = next(f for f in dataclasses.fields(CoreSettings) if f.name == name)
    return field(default=default, metadata={**base.metadata, "doc": doc or base.metadata["doc"]})


def settings_table(cls: type[CoreSettings]) -> str:
    """Markdown table of a settings class: variable, default, meaning (for docs/configuration.md)."""
    rows = ["| Variable | Default | What it does |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        default = f.default
        shown = "auto" if default is None and "auto" in f.metadata["doc"] else (
            "unset" if default is None else f"`{default}`")
        rows.append(f"| `{f.metadata['env']}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows)
