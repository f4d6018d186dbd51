"""Prometheus metrics of both services, correct under gunicorn with several worker processes.

gunicorn's config (core/gunicorn_conf.py) points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before any worker starts; each worker then writes its samples to files there and
``GET /metrics``, answered by whichever worker gets the scrape, adds up every worker's files.
Without that variable (tests with Flask's client, scripts) the metrics live in this process.

Everything is observed from outside the batcher and the backend: requests in ``after_request``,
inputs as the services count them into the request context (core/request_context.py), by door,
batches by wrapping the runner's ``run_batch`` and ``submit_many`` once it exists, queue depth,
GPU memory and model load time by a small monitor thread, which also logs the ready line.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import weakref

from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)

from core import request_context
from core.web.openapi import operation

log = logging.getLogger("core.web.metrics")

# Decided by prometheus-client when it is first imported, from PROMETHEUS_MULTIPROC_DIR.
MULTIPROCESS = values.ValueClass is not values.MutexValue

REJECTED_STATUSES = frozenset({413, 429, 503, 504})
MONITOR_INTERVAL_S = 1.0
GPU_SAMPLE_INTERVAL_S = 15.0

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_RATIO_BUCKETS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)

REQUESTS = Counter("http_requests_total", "HTTP requests answered, by route, method and status.",
                   ["route", "method", "status"])
REQUEST_SECONDS = Histogram("http_request_duration_seconds", "Time to answer a request, by route.",
                            ["route"], buckets=_LATENCY_BUCKETS)
REJECTIONS = Counter("http_rejections_total",
                     "Requests refused with 413/429/503/504, by status and error code.", ["status", "reason"])
QUEUE_DEPTH = Gauge("inference_queue_depth", "Items waiting for the model (all workers).",
                    multiprocess_mode="livesum")
QUEUE_WAIT = Histogram("inference_queue_wait_seconds", "Time an item waited between submit and its batch.",
                       buckets=_LATENCY_BUCKETS)
BATCH_SIZE = Histogram("inference_batch_size", "Items per model call, by kind.", ["kind"],
                       buckets=_BATCH_BUCKETS)
BATCH_FILL = Histogram("inference_batch_fill_ratio", "Batch size / MAX_BATCH_SIZE, by kind.", ["kind"],
                       buckets=_RATIO_BUCKETS)
FORWARD_SECONDS = Histogram("model_forward_seconds", "Time of one model call (one batch), by kind.",
                            ["kind"], buckets=_LATENCY_BUCKETS)
BATCH_FAILURES = Counter("inference_batch_failures_total", "Model calls that raised, by kind.", ["kind"])
# Input units a service may declare (Declaration.units): counted by the services, once per input
# they processed, by door (http, callback, event, job), as ``<unit>_processed_total``. Only the units
# the service declared appear in its /metrics; a unit not listed here gets a generic help text.
UNITS = {
    "images": "Images embedded or classified, by door.",
    "texts": "Texts embedded, by door.",
    "tokens": "Tokens embedded (after truncation), by door.",
    "audio_seconds": "Seconds of audio transcribed, by door.",
}
_unit_counters: dict[str, Counter] = {}
REAL_TIME_FACTOR_NAME = "transcription_real_time_factor"  # with the audio_seconds unit only
_real_time_factor: list[Histogram] = []
MODEL_LOAD_SECONDS = Gauge("model_load_seconds", "Seconds from app start to ready (load + warm-up), per worker.",
                           multiprocess_mode="max")
MODEL_READY = Gauge("model_ready", "1 when the worker's model serves, else 0 (summed over workers).",
                    multiprocess_mode="livesum")
# A device-wide reading: every process on a GPU reads the same figure, so the processes' samples
# are not added up (that read 8x too high with 8 CLIP processes on an L4); the latest reading of
# each GPU is the value, labelled by its physical id (several GPUs, one process set each).
GPU_MEMORY = Gauge("gpu_memory_used_bytes", "GPU memory in use on each GPU (CUDA only; the latest reading).",
                   ["gpu"], multiprocess_mode="mostrecent")
BATCH_LIMIT = Gauge("inference_batch_limit",
                    "The batch limit now, the smallest of the workers; below MAX_BATCH_SIZE once GPU "
                    "out-of-memory errors shrank it.", multiprocess_mode="livemin")
OUT_OF_MEMORY = Counter("inference_out_of_memory_total",
                        "GPU out-of-memory errors: batches split and run again, items that failed alone.",
                        ["outcome"])
RATE_LIMIT_STORAGE_ERRORS = Counter("rate_limit_storage_errors_total",
                                    "Requests whose rate-limit check could not reach the storage, by outcome.",
                                    ["outcome"])


# ---- hooks (one call each where something happens) -------------------------------------------

def rate_limit_storage_error(fail_closed: bool) -> None:
    """Count one request the limiter could not check (served unlimited, or refused)."""
    RATE_LIMIT_STORAGE_ERRORS.labels("refused" if fail_closed else "allowed").inc()


def observe_batch(kind, size: int, max_batch_size: int, seconds: float, failed: bool = False) -> None:
    """Record one model call: its size, fill ratio and duration."""
    label = str(kind)
    BATCH_SIZE.labels(label).observe(size)
    BATCH_FILL.labels(label).observe(min(1.0, size / max(1, max_batch_size)))
    FORWARD_SECONDS.labels(label).observe(seconds)
    if failed:
        BATCH_FAILURES.labels(label).inc()


def observe_queue_wait(seconds: float) -> None:
    """Record how long one item waited for its batch."""
    QUEUE_WAIT.observe(max(0.0, seconds))


def declare_units(app, units) -> None:
    """Create this process's counters for ``units`` (each door's series at 0 from the start, in every
    process alike) and remember them as the app's, so its /metrics shows only these."""
    for unit in units:
        if unit not in _unit_counters:
            counter = Counter(f"{unit}_processed_total", UNITS.get(unit, f"{unit} processed, by door."), ["door"])
            for door in request_context.DOORS:
                counter.labels(door)
            _unit_counters[unit] = counter
    if "audio_seconds" in units and not _real_time_factor:
        _real_time_factor.append(Histogram(REAL_TIME_FACTOR_NAME,
                                           "Request wall time / audio duration (below 1 = faster than real time).",
                                           buckets=_RTF_BUCKETS))
    if app is not None:  # None: a batch job, which has no /metrics
        app.extensions["metric_units"] = tuple(units)


def observe_inputs(context: request_context.RequestContext, counts: dict) -> None:
    """Count inputs a service processed, labelled with the door of the request that sent them."""
    try:
        for unit, amount in counts.items():
            counter = _unit_counters.get(unit)
            if counter is not None and amount:
                counter.labels(context.door).inc(amount)
        audio_seconds = float(counts.get("audio_seconds") or 0)
        if audio_seconds > 0 and _real_time_factor:
            _real_time_factor[0].observe((time.monotonic() - context.started) / audio_seconds)
    except Exception:  # noqa: BLE001 - a metric must never fail the work it counts
        log.exception("input metrics failed")


request_context.observe(observe_inputs)


# ---- the runner, observed from outside ---------------------------------------------------------

def instrument_runner(runner) -> bool:
    """Wrap the runner's batcher so batches and queue waits are recorded; idempotent."""
    batcher = getattr(runner, "batcher", None)
    if batcher is None or getattr(batcher, "_metrics_instrumented", False):
        return False
    run_batch = batcher.run_batch
    submit_many = batcher.submit_many
    current = {"started": 0.0}  # one model thread per batcher: the batch being run now

    @functools.wraps(run_batch)
    def timed_run_batch(kind, payloads):
        started = current["started"] = time.monotonic()
        try:
            outputs = run_batch(kind, payloads)
        except BaseException:
            observe_batch(kind, len(payloads), batcher.max_batch_size, time.monotonic() - started, failed=True)
            raise
        observe_batch(kind, len(payloads), batcher.max_batch_size, time.monotonic() - started)
        return outputs

    def waited(submitted: float, future) -> None:
        # Done callbacks run on the model thread right after the batch that resolved the item.
        if not future.cancelled() and future.exception() is None and current["started"] >= submitted:
            observe_queue_wait(current["started"] - submitted)

    @functools.wraps(submit_many)
    def timed_submit_many(*args, **kwargs):
        submitted = time.monotonic()
        futures = submit_many(*args, **kwargs)
        for future in futures:
            future.add_done_callback(functools.partial(waited, submitted))
        return futures

    batcher.run_batch = timed_run_batch
    batcher.submit_many = timed_submit_many
    batcher._metrics_instrumented = True
    return True


def gpu_memory_bytes(device: str | None) -> int | None:
    """Bytes in use on ``device`` (cuda[:N]), from torch when loaded, else nvidia-smi; None elsewhere."""
    if not device or not str(device).startswith("cuda"):
        return None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        free, total = torch.cuda.mem_get_info(torch.device(device))
        return int(total - free)
    if shutil.which("nvidia-smi") is None:
        return None
    index = str(device).partition(":")[2] or "0"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                              "-i", index], capture_output=True, text=True, timeout=5)
        return int(float(out.stdout.strip().splitlines()[0]) * 1024 * 1024)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def physical_gpu(device: str, environ=os.environ) -> str:
    """The physical id of ``device`` (cuda[:N]): N-th of CUDA_VISIBLE_DEVICES (gunicorn pins each worker)."""
    index = int(str(device).partition(":")[2] or 0)
    visible = [v.strip() for v in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[index] if index < len(visible) else str(index)


def report_gpu_memory(device: str | None) -> None:
    """Set the GPU-memory gauge of this process's device from one device-wide reading."""
    used = gpu_memory_bytes(device)
    if used is not None:
        GPU_MEMORY.labels(gpu=physical_gpu(device)).set(used)


class Monitor(threading.Thread):
    """Per worker: instruments the runner, samples queue depth and GPU memory, logs the ready line."""

    def __init__(self, app: Flask):
        super().__init__(name="metrics-monitor", daemon=True)
        self.app_ref = weakref.ref(app)
        self.service = "service"
        self.started_at = time.monotonic()
        self.ready_seen = False
        self.device = None
        self.gpu_sampled_at = 0.0
        self.oom_seen = {"split": 0, "failed": 0}

    def run(self) -> None:
        while True:
            app = self.app_ref()
            if app is None:
                return  # the app is gone (tests build many)
            runner = app.extensions.get("model_runner")
            self.service = app.extensions.get("service_name", self.service)
            del app
            if runner is not None:
                try:
                    self.sample(runner)
                except Exception:  # noqa: BLE001 - metrics must never take the worker down
                    log.exception("metrics sampling failed")
            time.sleep(MONITOR_INTERVAL_S if self.ready_seen else 0.05)

    def sample(self, runner) -> None:
        """Refresh this worker's gauges; on the first ready sample, record load time and log it."""
        instrument_runner(runner)
        batcher = runner.batcher
        QUEUE_DEPTH.set(batcher.queue_depth())
        ready = batcher.state == "ready"
        MODEL_READY.set(1 if ready else 0)
        if ready:
            BATCH_LIMIT.set(batcher.max_batch_size)
        self._count_oom(batcher.stats)
        if ready and not self.ready_seen:
            self.ready_seen = True
            load_seconds = time.monotonic() - self.started_at
            MODEL_LOAD_SECONDS.set(load_seconds)
            _, _, details = runner.health()
            self.device = details.get("device")
            from core.web.logs import log_ready

            log_ready(logging.getLogger(f"{self.service}.ready"), self.service, details, load_seconds,
                      details.get("batching", {}))
        if self.device and time.monotonic() - self.gpu_sampled_at > GPU_SAMPLE_INTERVAL_S:
            self.gpu_sampled_at = time.monotonic()
            report_gpu_memory(self.device)

    def _count_oom(self, stats) -> None:
        """Add the batcher's new out-of-memory events to the counter (it keeps its own totals)."""
        for outcome, total in (("split", stats.oom_splits), ("failed", stats.oom_failed_items)):
            if total > self.oom_seen[outcome]:
                OUT_OF_MEMORY.labels(outcome).inc(total - self.oom_seen[outcome])
                self.oom_seen[outcome] = total


# ---- Flask wiring --------------------------------------------------------------------------------

def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"  # bounded label values, never raw paths


def render_latest(units: tuple[str, ...] | None = None) -> bytes:
    """The Prometheus text of every worker (multiprocess mode) or of this process.

    In one process several apps may have declared units (tests build many): ``units`` keeps only
    the counters of the app asking. Under gunicorn only the app's own processes write samples.
    """
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    if units is None:
        return generate_latest(REGISTRY)
    skip = {f"{unit}_processed" for unit in _unit_counters if unit not in units}
    if "audio_seconds" not in units:
        skip.add(REAL_TIME_FACTOR_NAME)
    return generate_latest(_Without(skip))


class _Without:
    """This process's registry minus some metric families."""

    def __init__(self, names: set[str]):
        self.names = names

    def collect(self):
        return (family for family in REGISTRY.collect() if family.name not in self.names)


def install_metrics(app: Flask) -> None:
    """Count every request, serve GET /metrics, and start this worker's monitor thread."""

    @app.before_request
    def _metrics_clock():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response):
        try:
            _count_request(response)
        except Exception:  # noqa: BLE001 - a metric must never turn an answer into a 500
            log.exception("request metrics failed")
        return response

    def _count_request(response) -> None:
        route = _route()
        if route == "/metrics":
            return  # scrapes would dominate the request counts
        elapsed = time.perf_counter() - g.get("metrics_started", time.perf_counter())
        status = response.status_code
        REQUESTS.labels(route, request.method, str(status)).inc()
        REQUEST_SECONDS.labels(route).observe(elapsed)
        if status in REJECTED_STATUSES:
            REJECTIONS.labels(str(status), g.get("error_code") or "unknown").inc()

    @app.get("/metrics")
    @operation("Prometheus metrics (text format; multiprocess-correct under gunicorn)",
               responses={200: ("Prometheus text exposition format.", {"text/plain": {"type": "string"}})},
               tags=["operations"])
    def metrics():
        runner = current_app.extensions.get("model_runner")
        if runner is not None:
            QUEUE_DEPTH.set(runner.batcher.queue_depth())  # this worker's, fresh
        return Response(render_latest(current_app.extensions.get("metric_units")), content_type=CONTENT_TYPE_LATEST,
                        headers={"Cache-Control": "no-store"})

    Monitor(app).start()
