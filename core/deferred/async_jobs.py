"""Requests with ``callback_url``: accept now (202), run on a few threads, deliver the result.

A route validates its request as usual, then hands ``answer`` a callable that does the work
through the app's service (so the job goes through the same batcher as a synchronous request):

    return answer(lambda: service.embed(images, texts), callback_url_from(fields))

Without a callback URL that runs the work at once and renders it; with one it checks the URL
(400 at once if the guard refuses it), queues the job (429 + Retry-After when ``ASYNC_QUEUE`` is
full) and answers ``202 {"job_id", "status": "queued", "status_url"}``. ``GET /jobs/<id>`` shows the
record. On SIGTERM (gunicorn hooks below) jobs get until shortly before the graceful timeout;
those that cannot finish are delivered as ``failed`` with code ``shutting_down``. A job's thread
opens its own request context (door ``callback``): its deadline, batch sizes and input counts.

Under gunicorn a job also outlives its process: before the 202 its request is spooled to the job
store (core/deferred/spool.py) and its record names this process, whose heartbeat the others
watch; when the process dies another takes the job over (core/deferred/recovery.py).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request, url_for

from core import request_context
from core.deferred import spool
from core.deferred.address_guard import AddressGuard
from core.deferred.callbacks import CallbackSender, Deliverer, RetryPolicy, new_delivery_record
from core.deferred.durable import Publisher
from core.deferred.job_store import FINAL_DELIVERY, JobStore, make_job_store
from core.deferred.recovery import Recovery
from core.errors import InvalidInput, NotReady, Overloaded, ServiceError
from core.settings import CoreSettings
from core.web.logs import context_fields
from core.web.openapi import json_content, operation

log = logging.getLogger("core.deferred.async_jobs")

CALLBACK_FIELD = "callback_url"
# Seconds of the graceful timeout kept for delivering the shutting_down failures.
SHUTDOWN_DELIVERY_RESERVE_S = 2.0

Work = Callable[[], Any]


class JobNotFound(ServiceError):
    status, code = 404, "job_not_found"


class JobStoreUnavailable(ServiceError):
    """The job store cannot keep the job now, so it is not accepted (503 at submit time)."""

    status, code = 503, "job_store_unavailable"


class JobHeldHere(ServiceError):
    """A Pub/Sub redelivery of a job this process is running: not acknowledged, so it comes back."""

    status, code = 409, "job_running"


class ShuttingDown(ServiceError):
    """This instance is stopping: the job could not finish in time (503 at submit time)."""

    status, code = 503, "shutting_down"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _Job:
    job_id: str
    work: Work
    to_result: Callable[[Any], dict]
    callback_url: str
    accepted: float = field(default_factory=time.monotonic)
    finished: bool = False
    record: dict = field(default_factory=dict)
    save_lock: threading.Lock = field(default_factory=threading.Lock)  # store writes in snapshot order
    pushed: bool = False  # durable mode: run for a Pub/Sub push, which delivers it again if we stop


class AsyncJobs:
    """The queue, the threads that run jobs, their records and their callbacks."""

    def __init__(self, settings: CoreSettings, store: JobStore, guard: AddressGuard, sender: CallbackSender | None):
        self.settings = settings
        self.store = store
        self.guard = guard
        self.sender = sender
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=settings.async_queue)
        self._jobs: dict[str, _Job] = {}  # accepted and not yet finished
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._drain_deadline: float | None = None
        self._kill_at: float | None = None
        self._mean_job_s = 1.0
        self.recovery: Recovery | None = None  # set by start_recovery (under gunicorn)
        # Durable mode (JOB_TOPIC): accepted jobs are published and run by the push (core/deferred/durable.py).
        self.publisher = Publisher(settings.job_topic) if settings.job_topic else None
        self._threads = [threading.Thread(target=self._serve, name=f"async-job-{n}", daemon=True)
                         for n in range(settings.async_workers)]
        for thread in self._threads:
            thread.start()

    # ---- accepting ---------------------------------------------------------------------------

    def check_callback(self, callback_url: str) -> None:
        """Refuse now what could never be delivered: callbacks off, shutting down, a guarded URL."""
        if self.sender is None:
            raise InvalidInput("callback_url is not enabled on this service (its operator has not set "
                               "CALLBACK_SECRET)", code="callbacks_disabled")
        if self._stopping.is_set():
            raise ShuttingDown("this instance is shutting down; retry", retry_after=1)
        self.guard.check(callback_url)  # 400 now, not a failed delivery later

    def submit(self, work: Work, callback_url: str, to_result: Callable[[Any], dict],
               spooled: bytes | None = None) -> dict:
        """Queue a job (its URL checked first); returns its first record; 429 when the queue is full.

        With recovery on, ``spooled`` (the request, core/deferred/spool.py) and the record are in
        the store before this returns, or the job is refused with 503 job_store_unavailable.
        """
        job = _Job(uuid.uuid4().hex, work, to_result, callback_url)
        job.record = {"job_id": job.job_id, "status": "queued", "created_at": _now(), "updated_at": None,
                      "result": None, "callback": new_delivery_record()}
        if not self.has_room():
            raise self._full()
        if self.recovery is not None and spooled is not None:
            self._spool(job, spooled)
            if self.publisher is not None:
                self._publish(job)
                log.info("job accepted and published", extra={"job_id": job.job_id})
                return job.record
        with self._lock:
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                if job.record.get("owner"):
                    self._unspool(job)
                raise self._full() from None
            self._jobs[job.job_id] = job
        if not job.record.get("owner"):
            self._save(job)
        log.info("job accepted", extra={"job_id": job.job_id})
        return job.record

    def _full(self) -> Overloaded:
        return Overloaded(f"the async job queue is full ({self.settings.async_queue} jobs, ASYNC_QUEUE); "
                          "retry shortly", retry_after=self._retry_after())

    def _spool(self, job: _Job, spooled: bytes) -> None:
        """Request, claim and record in the store before the 202: a crash from here on loses nothing."""
        job.record.update(attempt=1, owner=self.recovery.owner)
        try:
            self.store.spool(self.recovery.space, job.job_id, spooled)
            self.store.claim(job.job_id, 1, self.recovery.owner)
            self.store.save(self._snapshot(job))
        except Exception as err:  # noqa: BLE001 - any store failure: refuse now, clearly
            log.warning("job store unavailable; job refused", extra={"error": f"{type(err).__name__}: {err}"})
            raise JobStoreUnavailable("the job store is unavailable, so the job cannot be kept; retry shortly",
                                      retry_after=5) from None

    def _publish(self, job: _Job) -> None:
        try:
            self.publisher.publish(job.job_id)
        except Exception as err:  # noqa: BLE001 - not published = not accepted
            self._unspool(job)
            log.warning("job topic unavailable; job refused", extra={"error": f"{type(err).__name__}: {err}"})
            raise JobStoreUnavailable("the job queue (Pub/Sub) is unavailable, so the job cannot be kept; "
                                      "retry shortly", retry_after=5) from None

    def run_published(self, job_id: str, attempt: int) -> dict:
        """Durable mode: run a job a Pub/Sub push delivered, here and now; returns the push's answer.

        Answers (2xx, acknowledged) once the result is stored and its delivery started; a process
        lost before that never answers, and Pub/Sub delivers the job again to any instance.
        """
        if self.recovery is None:
            raise JobStoreUnavailable("this process does not run durable jobs (not under gunicorn)", retry_after=5)
        record = self.store.get(job_id)
        blob = self.store.spooled(self.recovery.space, job_id) if record is not None else None
        if record is None or blob is None or record.get("callback", {}).get("state") in FINAL_DELIVERY:
            return {"status": "ignored", "reason": "unknown, expired or already delivered"}
        if self.holds(job_id):
            raise JobHeldHere(f"job {job_id} is running in this process", retry_after=10)
        spooled = spool.load(blob)
        record.update(owner=self.recovery.owner, attempt=attempt)
        if record["status"] in ("succeeded", "failed"):
            self.redeliver(record, spooled.callback_url)
            return {"status": "redelivered"}
        if attempt > self.settings.job_max_attempts:
            self.fail_lost(record, spooled.callback_url, attempt - 1)
            return {"status": "failed", "code": "worker_lost"}
        record.update(status="queued", result=None)
        job = self._adopt(record, spooled.callback_url, lambda: spool.replay(self.recovery.app, spooled))
        job.pushed = True
        self._run(job)
        return {"status": job.record["status"]}

    def _unspool(self, job: _Job) -> None:
        try:
            self.store.unspool(self.recovery.space, job.job_id, int(job.record.get("attempt", 1)))
        except Exception:  # noqa: BLE001 - left for the next scan, which drops it (callback final)
            log.exception("could not drop the spooled request", extra={"job_id": job.job_id})

    def has_room(self) -> bool:
        """True while the queue can take another job."""
        return not self._queue.full()

    def holds(self, job_id: str) -> bool:
        """True when this process runs or delivers the job."""
        with self._lock:
            return job_id in self._jobs

    def _retry_after(self) -> int:
        waiting = self._queue.qsize() / max(1, self.settings.async_workers)
        return max(1, min(60, math.ceil(waiting * self._mean_job_s)))

    def get(self, job_id: str) -> dict | None:
        """The stored record of a job, or None."""
        return self.store.get(job_id)

    # ---- running -----------------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            job = self._queue.get()
            if job.finished:  # failed as shutting_down while it waited
                continue
            self._run(job)

    def _run(self, job: _Job) -> None:
        started = time.monotonic()
        with self._lock:
            job.record["status"] = "running"
        self._save(job)
        seen: dict = {"batch_sizes": []}  # the last attempt's batch sizes and input counts, for the log
        try:
            value = self._call(job, seen)
            body = {**job.to_result(value), "job_id": job.job_id, "status": "succeeded"}
        except ServiceError as err:
            body = failure_body(job.job_id, err.code, err.message)
        except Exception as err:  # noqa: BLE001 - the job fails, the thread keeps serving
            log.exception("job crashed", extra={"job_id": job.job_id})
            body = failure_body(job.job_id, "internal_error", f"{type(err).__name__}: {err}")
        elapsed = time.monotonic() - started
        self._mean_job_s = 0.8 * self._mean_job_s + 0.2 * elapsed
        log.info("job %s", body["status"], extra={"job_id": job.job_id, **seen,
                                                   "latency_ms": round(elapsed * 1000, 1)})
        self._finish(job, body)

    def _call(self, job: _Job, seen: dict) -> Any:
        """Run the work; a full batcher queue or a loading model is waited out, not failed.

        Each attempt is one request through the ``callback`` door, with its own deadline.
        """
        give_up_at = job.accepted + self.settings.request_timeout_s
        while True:
            try:
                with request_context.opened("callback") as context:
                    try:
                        return job.work()
                    finally:
                        seen.update(context_fields(context))
            except (Overloaded, NotReady) as err:
                wait = float(err.retry_after or 1)
                if time.monotonic() + wait > give_up_at:
                    raise
                if self._stopping.wait(wait):
                    raise ShuttingDown("the instance shut down before the job could run") from None

    def _finish(self, job: _Job, body: dict) -> None:
        with self._lock:
            if job.finished:  # already failed as shutting_down
                return
            job.finished = True
            job.work = None  # drop the upload now; only the result waits for delivery
            job.record.update(status=body["status"], result=body)
            self._lock.notify_all()
        self._save(job)
        self._deliver(job, body)

    def _deliver(self, job: _Job, body: dict) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        self.sender.send(job.job_id, job.callback_url, payload, lambda delivery: self._delivered(job, delivery))

    def _delivered(self, job: _Job, delivery: dict) -> None:
        with self._lock:
            job.record["callback"] = dict(delivery)
            self._jobs.pop(job.job_id, None)
            self._lock.notify_all()
        self._save(job)
        if self.recovery is not None and job.record.get("owner"):
            self._unspool(job)  # final: nothing left to take over

    # ---- taken over from a process that is gone (core/deferred/recovery.py) ------------------

    def _adopt(self, record: dict, callback_url: str, work: Work | None) -> _Job:
        job = _Job(record["job_id"], work, lambda body: body, callback_url, record=record)
        with self._lock:
            self._jobs[job.job_id] = job
        return job

    def rerun(self, record: dict, callback_url: str, work: Callable[[], dict]) -> None:
        """Run a job again from its spooled request (``work`` returns the callback body)."""
        record.update(status="queued", result=None)
        job = self._adopt(record, callback_url, work)
        self._save(job)
        try:
            self._queue.put_nowait(job)
        except queue.Full:  # raced with a submit: the claim is ours, so run it on the next free thread
            threading.Thread(target=self._run, args=(job,), name="async-job-adopted", daemon=True).start()

    def redeliver(self, record: dict, callback_url: str) -> None:
        """Deliver a finished job's stored result again (its callback was not final)."""
        job = self._adopt(record, callback_url, None)
        job.finished = True
        self._save(job)
        self._deliver(job, record["result"])

    def fail_lost(self, record: dict, callback_url: str, runs: int) -> None:
        """End a job whose process died ``runs`` times: failed, code worker_lost, delivered."""
        job = self._adopt(record, callback_url, None)
        self._finish(job, failure_body(job.job_id, "worker_lost",
                                       f"the process running this job was lost {runs} times (JOB_MAX_ATTEMPTS="
                                       f"{self.settings.job_max_attempts}); submit it again"))

    def start_recovery(self, app: Flask) -> Recovery | None:
        """Spool jobs, beat, and take over the jobs of lost processes (gunicorn workers; tests)."""
        if self.sender is None or self.recovery is not None:
            return self.recovery  # callbacks off: no job is ever accepted here
        self.recovery = Recovery(self, app, self.settings.job_lease_s, self.settings.job_max_attempts).start()
        return self.recovery

    def progress(self, job_id: str, delivery: dict) -> None:
        """A retry is scheduled: make the attempts so far visible at status_url."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            job.record["callback"] = dict(delivery)
        self._save(job)

    def _snapshot(self, job: _Job) -> dict:
        """The record as it is saved: stamped now, copied under the lock (nothing shared with the job)."""
        with self._lock:
            job.record["updated_at"] = _now()
            return json.loads(json.dumps(job.record))

    def _save(self, job: _Job) -> None:
        with job.save_lock:
            record = self._snapshot(job)
            try:
                self.store.save(record)
            except Exception:  # noqa: BLE001 - a store outage must not stop the job or its callback
                log.exception("could not save the job record", extra={"job_id": job.job_id})

    # ---- shutting down -----------------------------------------------------------------------

    def begin_shutdown(self, graceful_timeout_s: float | None = None) -> None:
        """SIGTERM arrived: refuse new jobs; running and queued ones get until the drain deadline."""
        if self._stopping.is_set():
            return
        grace = self.settings.graceful_timeout_s if graceful_timeout_s is None else graceful_timeout_s
        now = time.monotonic()
        self._kill_at = now + grace
        self._drain_deadline = now + max(0.0, grace - min(SHUTDOWN_DELIVERY_RESERVE_S, grace / 2))
        self._stopping.set()
        log.info("async jobs draining",
                 extra={"jobs": len(self._jobs), "drain_s": round(self._drain_deadline - now, 2)})

    def drain(self) -> None:
        """Wait for jobs until the drain deadline, fail the rest as shutting_down, deliver, return."""
        self.begin_shutdown()
        with self._lock:
            while any(not job.finished and not job.pushed for job in self._jobs.values()):
                remaining = self._drain_deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            # A pushed job is not failed: its push goes unanswered and Pub/Sub delivers it again.
            unfinished = [job for job in self._jobs.values() if not job.finished and not job.pushed]
        if self.sender is None:
            return
        self.sender.finalize()  # from here each delivery gets one short attempt
        for job in unfinished:
            log.warning("job cut short by shutdown", extra={"job_id": job.job_id})
            self._finish(job, failure_body(job.job_id, "shutting_down",
                                           "the instance shut down before the job finished; submit it again"))
        delivered = self.sender.flush(max(0.1, self._kill_at - time.monotonic() - 0.2))
        if not delivered:
            log.warning("callbacks still undelivered at shutdown", extra={"pending": self.sender.pending()})

    def pending(self) -> int:
        """Jobs accepted whose callback is not final yet."""
        with self._lock:
            return len(self._jobs)


def failure_body(job_id: str, code: str, message: str) -> dict:
    """The callback body of a failed job."""
    return {"job_id": job_id, "status": "failed", "error": {"code": code, "message": message}}


# ---- Flask glue ------------------------------------------------------------------------------

bp = Blueprint("jobs", __name__)
CALLBACK_URL_SCHEMA = {"type": "string", "format": "uri",
                       "description": "Answer 202 at once and POST the result here (see 'Async requests')."}
JOB_ACCEPTED_SCHEMA = {"type": "object", "required": ["job_id", "status", "status_url"],
                       "properties": {"job_id": {"type": "string"}, "status": {"const": "queued"},
                                      "status_url": {"type": "string"}}}
JOB_STATUS_SCHEMA = {"type": "object", "required": ["job_id", "status"],
                     "properties": {"job_id": {"type": "string"},
                                    "status": {"enum": ["queued", "running", "succeeded", "failed"]},
                                    "result": {"type": "object"}, "error": {"type": "object"},
                                    "callback": {"type": "object"}}}
# The extra response of every POST inference route that takes callback_url, for its @operation.
JOB_ACCEPTED = {202: ("Accepted as a job (callback_url given); the result is POSTed there.",
                      json_content(JOB_ACCEPTED_SCHEMA))}


@bp.get("/jobs/<job_id>")
@operation("Status of a callback_url job", responses={200: ("The job record.", json_content(JOB_STATUS_SCHEMA))},
           errors=(404,))
def job_status(job_id: str):
    """Status of a callback_url job and, once done, its result and delivery outcome."""
    record = current_app.extensions["async_jobs"].get(job_id)
    if record is None:
        ttl = int(current_app.extensions["settings"].job_ttl_s)
        raise JobNotFound(f"no job {job_id!r} here: unknown, expired (JOB_TTL={ttl} s), or held by "
                          "another instance (JOB_STORE_URI is per instance unless redis:// or gs://)")
    record.pop("owner", None)  # which process holds it: internal (core/deferred/recovery.py)
    response = jsonify(record)
    response.headers["Cache-Control"] = "no-store"
    return response


def install_async_jobs(app: Flask, settings: CoreSettings) -> AsyncJobs:
    """Set up the job store, the callback sender, the job threads and ``GET /jobs/<id>``."""
    guard = AddressGuard(settings.callback_allowed_hosts)
    store = make_job_store(settings.job_store_uri, settings.job_ttl_s)
    sender = None
    jobs: AsyncJobs
    if settings.callback_secret:
        policy = RetryPolicy(timeout_s=settings.callback_timeout_s, max_attempts=settings.callback_max_attempts,
                             max_age_s=settings.callback_max_age_s, backoff_s=settings.callback_backoff_s)
        sender = CallbackSender(Deliverer(settings.callback_secret, guard, policy),
                                on_attempt=lambda job_id, delivery: jobs.progress(job_id, delivery))
    jobs = AsyncJobs(settings, store, guard, sender)
    app.extensions["async_jobs"] = jobs
    app.register_blueprint(bp)
    return jobs


def callback_url_from(fields: dict | None = None) -> str | None:
    """The request's callback_url: popped from ``fields`` (form or JSON: a value or a list), else the query."""
    value = fields.pop(CALLBACK_FIELD, None) if fields is not None else None
    if isinstance(value, list):
        value = value[-1] if value else None
    if value is not None:
        if not isinstance(value, str):
            raise InvalidInput("callback_url must be a string", code="invalid_callback_url")
        return value
    return request.args.get(CALLBACK_FIELD)


def answer(work: Work, callback_url: str | None, *, respond: Callable[[Any], Any] = jsonify,
           to_result: Callable[[Any], dict] | None = None, validate: Callable[[], object] | None = None):
    """Run ``work`` now and ``respond`` with it, or accept it as a job when there is a callback URL.

    ``work()`` calls the service (in the request context of this request, or of the job's thread);
    ``to_result`` turns its value into the callback's JSON body (default: the value itself, for
    services that return the response dict);
    ``validate()`` runs before a 202 so undecodable inputs still get their 4xx at once.
    """
    if callback_url is None:
        return respond(work())
    if spool.replaying():  # a job taken over from a lost process: run it here, hand back its body
        return spool.Replayed(to_result(work()) if to_result else work())
    jobs: AsyncJobs = current_app.extensions["async_jobs"]
    jobs.check_callback(callback_url)
    runner = current_app.extensions.get("model_runner")
    if runner is not None:  # 503 while loading, like a synchronous request (or wait, if a sibling serves)
        runner.admit(request_context.deadline(current_app.extensions["settings"].request_timeout_s))
    if validate is not None:
        validate()
    spooled = spool.capture(callback_url) if jobs.recovery is not None else None
    record = jobs.submit(work, callback_url, to_result or (lambda value: value), spooled)
    status_url = url_for("jobs.job_status", job_id=record["job_id"], _external=True)
    response = jsonify({"job_id": record["job_id"], "status": "queued", "status_url": status_url})
    response.status_code = 202
    response.headers["Location"] = status_url
    return response


# ---- gunicorn hooks (core/gunicorn_conf.py) --------------------------------------------------

def _jobs_of(worker) -> AsyncJobs | None:
    return getattr(getattr(worker, "wsgi", None), "extensions", {}).get("async_jobs")


def gunicorn_post_worker_init(worker) -> None:
    """Jobs outlive this worker (spool, heartbeat, take-over); the drain clock starts at SIGTERM itself."""
    jobs = _jobs_of(worker)
    if jobs is None:
        return
    jobs.start_recovery(worker.wsgi)
    previous = signal.getsignal(signal.SIGTERM)

    def _on_sigterm(sig, frame):
        jobs.begin_shutdown(float(worker.cfg.graceful_timeout))
        if callable(previous):
            previous(sig, frame)

    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)


def gunicorn_worker_exit(server, worker) -> None:
    """The worker is leaving: finish or fail its jobs and deliver their callbacks first."""
    jobs = _jobs_of(worker)
    if jobs is not None:
        jobs.drain()
