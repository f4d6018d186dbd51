"""Jobs outlive the process that accepted them: a heartbeat per process, take-over of the rest.

Each process that runs callback jobs under gunicorn has an *owner* id and renews a heartbeat in
the job store every ``JOB_LEASE_S / 3`` seconds; its jobs' records name it. On the same beat it
looks at the jobs of its service whose request is still spooled (callback not final yet) and
whose owner's heartbeat has expired: the process was SIGKILLed, OOM-killed, timed out by
gunicorn, or its instance was lost. It claims the next attempt (create-if-absent in the store:
one process wins) and then

- re-runs the job from its spooled request, if it had not finished (up to ``JOB_MAX_ATTEMPTS``
  runs; the next take-over ends it ``failed`` with code ``worker_lost``, delivered like any
  result, so a request that kills every process it lands on ends);
- or delivers the stored result again, if it had finished but its callback was not final.

In durable mode (``JOB_TOPIC``, core/deferred/durable.py) Pub/Sub runs unfinished jobs again;
the scan then only delivers finished results again. Callbacks stay at-least-once with the same
``job_id``. A client waits at most about
``JOB_LEASE_S * 4/3`` after a crash before its job runs again (docs/async.md).
Which processes can take a job over is where the store reaches: file:// the processes of the
instance (and the next one on the same disk), redis:// and gs:// every instance.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from flask import Flask

from core.deferred import spool
from core.deferred.job_store import FINAL_DELIVERY, JobStore

log = logging.getLogger("core.deferred.recovery")


class Jobs(Protocol):
    """What recovery needs of ``core.deferred.async_jobs.AsyncJobs`` (which imports this module)."""

    store: JobStore
    publisher: Any

    def holds(self, job_id: str) -> bool: ...
    def has_room(self) -> bool: ...
    def rerun(self, record: dict, callback_url: str, work: Callable[[], dict]) -> None: ...
    def redeliver(self, record: dict, callback_url: str) -> None: ...
    def fail_lost(self, record: dict, callback_url: str, runs: int) -> None: ...


class Recovery:
    """This process's heartbeat, and the take-over of jobs whose process is gone."""

    def __init__(self, jobs: Jobs, app: Flask, lease_s: float, max_attempts: int):
        self.jobs = jobs
        self.store = jobs.store
        self.app = app
        self.space = app.import_name  # the service: a job is only ever replayed by its own routes
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.owner = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-lease", daemon=True)

    def start(self) -> Recovery:
        """Beat once now (so this process's first jobs are covered at once), then keep beating and scanning."""
        self.store.beat(self.owner, self.lease_s)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating (tests; a process that exits simply stops)."""
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.store.beat(self.owner, self.lease_s)
                self.scan()
            except Exception:  # noqa: BLE001 - a store outage: try again on the next beat
                log.exception("job lease round failed")

    def scan(self) -> int:
        """Take over the jobs of processes that are gone; returns how many were taken."""
        taken = 0
        for job_id in self.store.spooled_ids(self.space):
            if self.jobs.holds(job_id):
                continue
            record = self.store.get(job_id)
            if record is None or record.get("callback", {}).get("state") in FINAL_DELIVERY:
                # Expired, or delivered but the spool could not be dropped then: nothing to do.
                self.store.unspool(self.space, job_id, int((record or {}).get("attempt", 1)))
                continue
            owner = record.get("owner")
            if owner and self.store.owner_alive(owner):
                continue
            if self.jobs.publisher is not None and record["status"] not in ("succeeded", "failed"):
                continue  # durable mode: Pub/Sub delivers an unfinished job again, not this scan
            if not self.jobs.has_room():
                break  # the rest wait for the next beat (or for a process with room)
            attempt = int(record.get("attempt", 1)) + 1
            if not self.store.claim(job_id, attempt, self.owner):
                continue  # a sibling took it first
            blob = self.store.spooled(self.space, job_id)
            if blob is None:
                continue
            self._take_over(record, spool.load(blob), attempt)
            taken += 1
        return taken

    def _take_over(self, record: dict, spooled: spool.SpooledRequest, attempt: int) -> None:
        job_id = record["job_id"]
        lost_by = record.get("owner")
        record.update(owner=self.owner, attempt=attempt)
        if record["status"] in ("succeeded", "failed"):
            log.warning("job taken over to deliver its result again", extra={"job_id": job_id, "attempt": attempt})
            self.jobs.redeliver(record, spooled.callback_url)
        elif attempt > self.max_attempts:
            log.error("job lost its process too often; failed as worker_lost",
                      extra={"job_id": job_id, "attempt": attempt, "lost_by": lost_by})
            self.jobs.fail_lost(record, spooled.callback_url, attempt - 1)
        else:
            log.warning("job taken over from a process that is gone; running it again",
                        extra={"job_id": job_id, "attempt": attempt, "lost_by": lost_by})
            self.jobs.rerun(record, spooled.callback_url, lambda: spool.replay(self.app, spooled))
