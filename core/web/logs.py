"""JSON-lines logs on stdout in the shape Cloud Logging parses.

Cloud Logging reads ``severity``, ``message``, ``httpRequest`` and
``logging.googleapis.com/trace`` from each JSON line written to stdout, so request logs group
under their trace in the console. Request bodies, headers and keys are never logged: the request
line carries method, path, status, latency and batch sizes only.

Request threads never write to stdout themselves: they format their line (JSON, extras,
traceback, trace id, all while the request and its exception are still at hand) and queue it; one
writer thread (a ``QueueListener``) does the writing. A slow or full stdout pipe (the log agent
falling behind) then delays log lines, not responses. ``stop_logging`` writes out what is queued;
it runs at exit and in gunicorn's worker_exit, so no line is lost at SIGTERM.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import sys
import threading
import time
from logging.handlers import QueueHandler, QueueListener

from flask import Flask, g, has_request_context, request

from core import request_context

# ``scheme://user:password@host``: the password part of any URI (Redis, database) in a log line.
_URI_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s\"']*:)[^@\s\"'/]+@")


def mask_uri(text: str) -> str:
    """Replace the password of every ``scheme://user:password@`` in ``text`` with ``***``."""
    return _URI_PASSWORD.sub(r"\1***@", text)


# Attributes every LogRecord has; anything else passed via ``extra=`` is emitted as a field.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: severity, message, time, logger, trace and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "logger": record.name,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        # Every line, whatever logged it (gunicorn, flask-limiter, redis): no URI password leaves.
        return mask_uri(json.dumps(entry, default=str))


class _TraceFilter(logging.Filter):
    """Adds the Cloud Trace id of the current request to every record logged inside it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            trace = g.get("trace")
            if trace and not hasattr(record, "logging.googleapis.com/trace"):
                setattr(record, "logging.googleapis.com/trace", trace)
        return True


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time (test capture and redirection follow it)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


class _Preformatted(logging.Formatter):
    """The writer's formatter: the line was already formatted (as JSON) by the thread that logged it."""

    def format(self, record: logging.LogRecord) -> str:
        return record.msg


class _QueuedJsonHandler(QueueHandler):
    """The root handler: formats each record as a JSON line and queues it for the writer thread.

    The queue is unbounded on purpose: a bounded one would make request threads wait (or drop
    lines) exactly when stdout is slow. Before ``start`` and after ``stop`` (and in a forked child,
    where the writer thread does not exist) lines are written directly, so none is ever lost.
    """

    def __init__(self):
        super().__init__(queue.Queue())
        self.setFormatter(JsonFormatter())
        self.addFilter(_TraceFilter())  # here, on the logging thread: the request context is there
        self.writer = _StdoutHandler()
        self.writer.setFormatter(_Preformatted())
        self.listener = QueueListener(self.queue, self.writer)
        self.queued = False
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def emit(self, record: logging.LogRecord) -> None:
        # handle() holds self.lock around emit(), and stop() flips ``queued`` under the same lock:
        # no line can be queued behind the listener's stop sentinel.
        if self.queued:
            super().emit(record)  # prepare() formats: the queued record's msg is the JSON line
        else:
            self.writer.handle(self.prepare(record))

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        with self.lock:
            if not self.queued:
                self.listener.start()
                self.queued = True

    def stop(self) -> None:
        """Write out every queued line, stop the writer thread, and write directly from now on."""
        with self.lock:  # loggers wait here while the backlog drains: their lines come after it
            if self.queued:
                self.queued = False
                self.listener.stop()

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait (up to ``timeout_s``) until the writer has written every line queued so far."""
        with self.queue.all_tasks_done:
            self.queue.all_tasks_done.wait_for(lambda: not self.queue.unfinished_tasks, timeout_s)
        self.writer.flush()

    def close(self) -> None:
        self.stop()  # logging.shutdown() at exit closes handlers: the backlog is written first
        super().close()

    def _after_fork_in_child(self) -> None:
        # The writer thread is not copied by fork, and the queue's lock may have been held by it.
        self.queue = queue.Queue()
        self.listener = QueueListener(self.queue, self.writer)
        self.queued = False


_configure_lock = threading.Lock()


def _root_handler() -> _QueuedJsonHandler | None:
    return next((h for h in logging.getLogger().handlers if isinstance(h, _QueuedJsonHandler)), None)


def configure_logging(level: str = "INFO") -> None:
    """Route the root logger to stdout as JSON lines through the writer thread (idempotent)."""
    root = logging.getLogger()
    with _configure_lock:
        handler = _root_handler()
        if handler is None:
            handler = _QueuedJsonHandler()
            root.handlers = [h for h in root.handlers if not isinstance(h, logging.StreamHandler)]
            root.addHandler(handler)
            atexit.register(stop_logging)
        handler.start()  # also after a stop_logging(): a test, or an app built again
    root.setLevel(level)
    # Third-party chatter that would otherwise drown the request lines.
    for noisy in ("faster_whisper", "urllib3", "PIL", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # transformers' "Loading weights" bar writes half-lines to stderr between the JSON lines.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def flush_logs(timeout_s: float = 5.0) -> None:
    """Wait until every line logged so far is on stdout (tests read it right after a request)."""
    handler = _root_handler()
    if handler is not None:
        handler.flush(timeout_s)


def stop_logging() -> None:
    """Write out every queued line and stop the writer thread (at exit, gunicorn worker_exit)."""
    handler = _root_handler()
    if handler is not None:
        handler.stop()


def trace_from_header(header: str | None, project: str | None) -> str | None:
    """``X-Cloud-Trace-Context: TRACE/SPAN;o=1`` -> Cloud Logging's trace field value."""
    if not header:
        return None
    trace_id = header.split("/", 1)[0].strip()
    if not trace_id or not all(c in "0123456789abcdefABCDEF" for c in trace_id):
        return None
    return f"projects/{project}/traces/{trace_id}" if project else trace_id


def context_fields(context: request_context.RequestContext | None) -> dict:
    """A door's log fields from its request context: batch sizes and input counts, when there are any."""
    fields: dict = {}
    if context is None:
        return fields
    if context.batch_sizes:
        fields["batch_sizes"] = list(context.batch_sizes)
    if context.inputs:
        fields["inputs"] = {name: round(value, 2) for name, value in context.inputs.items()}
    return fields


def install_request_logging(app: Flask) -> None:
    """Log one structured line per request, after it finishes."""
    request_log = logging.getLogger(f"{app.import_name}.requests")
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCP_PROJECT")

    @app.before_request
    def _start_clock():
        g.started = time.perf_counter()
        g.trace = trace_from_header(request.headers.get("X-Cloud-Trace-Context"), project)

    @app.after_request
    def _log_request(response):
        started = g.get("started")
        latency = time.perf_counter() - started if started is not None else 0.0
        fields = {
            "httpRequest": {
                "requestMethod": request.method,
                "requestUrl": request.path,  # path only: a query string could carry anything
                "status": response.status_code,
                "latency": f"{latency:.3f}s",
                "responseSize": response.calculate_content_length(),
                "userAgent": request.headers.get("User-Agent", "")[:200],
            },
            "latency_ms": round(latency * 1000, 1),
        }
        fields.update(context_fields(request_context.current()))
        level = logging.WARNING if response.status_code >= 500 else logging.INFO
        if request.path == "/health":
            # Probes every few seconds would drown everything else; 503 while loading is normal.
            level = logging.DEBUG if response.status_code == 200 else logging.INFO
        request_log.log(level, "%s %s %s", request.method, request.path, response.status_code,
                        extra=fields)
        return response


def log_ready(logger: logging.Logger, service: str, details: dict, load_seconds: float | None,
              batching: dict) -> None:
    """The one line a service logs when it becomes ready: model, device, dim, load time, batching."""
    fields = {key: details.get(key) for key in ("model", "device", "dim", "dtype", "compute_type")
              if details.get(key) is not None}
    logger.info("%s ready: model %s on %s%s, loaded in %.1f s, batches of up to %s (wait %s ms, queue %s)",
                service, fields.get("model"), fields.get("device"),
                f", dim {fields['dim']}" if "dim" in fields else "", load_seconds or 0.0,
                batching.get("max_batch_size"), batching.get("max_wait_ms"), batching.get("max_queue"),
                extra={"ready": {**fields, "load_seconds": round(load_seconds or 0.0, 2), "batching": batching}})
