"""Async job records behind one small interface, in the store ``JOB_STORE_URI`` names.

A record is a JSON-ready dict (``job_id``, ``status``, times, ``result``, ``callback``) kept for
``JOB_TTL`` seconds after its last change. Each job has one writer at a time (the process that
accepted it, or the one that took it over), so ``save`` replaces the whole record and needs no
transaction.

For jobs to outlive their process (core/deferred/recovery.py) a store also keeps, per service
(``space``), each unfinished job's spooled request, until its callback is final; one *claim* per
job and attempt, taken by exactly one process (create-if-absent); and a heartbeat per process
(``owner``) that says it is alive until a time.

- ``file:///DIR`` (the default, ``/tmp/inference-jobs``): one small JSON file per job, written
  atomically (temporary file + rename). Every gunicorn process of the instance reads the same
  directory, so a poll that lands on a sibling process finds the job. Bounded: a record expires
  after the TTL and the directory holds at most ``MAX_DIRECTORY_RECORDS`` (the oldest go first).
  On Cloud Run /tmp is memory, and it ends with the instance.
- ``redis://`` / ``rediss://``: shared by every instance; Redis expires the keys.
- ``gs://BUCKET/PREFIX``: one object per job, shared by every instance; reads honour the TTL, and a
  bucket lifecycle rule deletes old objects.
- ``memory://``: this process only (a single-process deployment, tests).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Protocol

from core.from_storage import storage
from core.settings import JOB_STORE_SCHEMES

KEY_PREFIX = "inference-job:"
SPOOL_PREFIX = "inference-job-spool:"
CLAIM_PREFIX = "inference-job-claim:"
OWNER_PREFIX = "inference-job-owner:"
# Enough for hours of callback jobs on one instance; at a few KB a record (an embedding, a short
# transcript) that is tens of MB of /tmp, which on Cloud Run is the instance's memory.
MAX_DIRECTORY_RECORDS = 10_000
# A job's callback is final (nothing left to run or deliver) in these states.
FINAL_DELIVERY = ("delivered", "failed")
# Job ids are uuid4 hex; anything else from a URL is unknown (and never becomes a path).
SWEEP_EVERY_S = 60.0  # how often a process removes expired records when it saves a new job
_JOB_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
SCHEMES = JOB_STORE_SCHEMES


class JobStore(Protocol):
    """Where job records live."""

    def save(self, record: dict) -> None:
        """Store ``record`` under ``record['job_id']`` for the TTL."""

    def get(self, job_id: str) -> dict | None:
        """The record, or None when unknown or expired."""

    def spool(self, space: str, job_id: str, data: bytes) -> None:
        """Keep an unfinished job's request (raises when the store cannot: the job is refused)."""

    def spooled(self, space: str, job_id: str) -> bytes | None:
        """The job's spooled request, or None."""

    def spooled_ids(self, space: str) -> list[str]:
        """The jobs of ``space`` with a spooled request: those whose callback is not final yet."""

    def unspool(self, space: str, job_id: str, attempts: int) -> None:
        """Drop the job's request and claims: its callback is final."""

    def claim(self, job_id: str, attempt: int, owner: str) -> bool:
        """Take attempt ``attempt`` of the job for ``owner``; False if another process has it."""

    def beat(self, owner: str, ttl_s: float) -> None:
        """``owner`` is alive for ``ttl_s`` more seconds."""

    def owner_alive(self, owner: str) -> bool:
        """True while ``owner``'s last heartbeat has not expired."""


class MemoryJobStore:
    """Records in a dict of this process, expired lazily."""

    def __init__(self, ttl_s: float, clock=time.monotonic):
        self.ttl_s = ttl_s
        self._clock = clock
        self._records: dict[str, tuple[float, str]] = {}
        self._spools: dict[tuple[str, str], bytes] = {}
        self._claims: dict[tuple[str, int], str] = {}
        self._owners: dict[str, float] = {}
        self._lock = threading.Lock()

    def save(self, record: dict) -> None:
        """Store a copy (JSON round trip: the same isolation Redis gives)."""
        now = self._clock()
        with self._lock:
            self._records[record["job_id"]] = (now + self.ttl_s, json.dumps(record))
            expired = [key for key, (expires, _) in self._records.items() if expires <= now]
            for key in expired:
                del self._records[key]

    def get(self, job_id: str) -> dict | None:
        """The record, or None when unknown or expired."""
        with self._lock:
            entry = self._records.get(job_id)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._records[job_id]
                return None
            return json.loads(entry[1])

    # This process only: nothing here outlives it, so these keep the interface and little more.
    def spool(self, space: str, job_id: str, data: bytes) -> None:
        self._spools[(space, job_id)] = data

    def spooled(self, space: str, job_id: str) -> bytes | None:
        return self._spools.get((space, job_id))

    def spooled_ids(self, space: str) -> list[str]:
        return [job_id for (name, job_id) in list(self._spools) if name == space]

    def unspool(self, space: str, job_id: str, attempts: int) -> None:
        self._spools.pop((space, job_id), None)

    def claim(self, job_id: str, attempt: int, owner: str) -> bool:
        return self._claims.setdefault((job_id, attempt), owner) == owner

    def beat(self, owner: str, ttl_s: float) -> None:
        self._owners[owner] = self._clock() + ttl_s

    def owner_alive(self, owner: str) -> bool:
        return self._owners.get(owner, 0.0) > self._clock()


class RedisJobStore:
    """Records as JSON strings with a Redis expiry, shared by every instance using the URI."""

    def __init__(self, uri: str, ttl_s: float):
        import redis

        self.ttl_s = ttl_s
        self._redis = redis.Redis.from_url(uri, socket_timeout=5, socket_connect_timeout=5)

    def save(self, record: dict) -> None:
        """SET with EX: the TTL restarts on every change."""
        self._redis.set(KEY_PREFIX + record["job_id"], json.dumps(record), ex=max(1, int(self.ttl_s)))

    def get(self, job_id: str) -> dict | None:
        """The record, or None when unknown or expired."""
        raw = self._redis.get(KEY_PREFIX + job_id)
        return None if raw is None else json.loads(raw)

    def spool(self, space: str, job_id: str, data: bytes) -> None:
        self._redis.set(f"{SPOOL_PREFIX}{space}:{job_id}", data, ex=max(1, int(self.ttl_s)))

    def spooled(self, space: str, job_id: str) -> bytes | None:
        return self._redis.get(f"{SPOOL_PREFIX}{space}:{job_id}")

    def spooled_ids(self, space: str) -> list[str]:
        start = len(f"{SPOOL_PREFIX}{space}:")
        return [key.decode()[start:] for key in self._redis.scan_iter(match=f"{SPOOL_PREFIX}{space}:*", count=500)]

    def unspool(self, space: str, job_id: str, attempts: int) -> None:
        self._redis.delete(f"{SPOOL_PREFIX}{space}:{job_id}",
                           *(f"{CLAIM_PREFIX}{job_id}:{n}" for n in range(1, attempts + 1)))

    def claim(self, job_id: str, attempt: int, owner: str) -> bool:
        return bool(self._redis.set(f"{CLAIM_PREFIX}{job_id}:{attempt}", owner, nx=True, ex=max(1, int(self.ttl_s))))

    def beat(self, owner: str, ttl_s: float) -> None:
        self._redis.set(OWNER_PREFIX + owner, b"1", px=max(1, int(ttl_s * 1000)))

    def owner_alive(self, owner: str) -> bool:
        return bool(self._redis.exists(OWNER_PREFIX + owner))


class ObjectJobStore:
    """One ``<prefix>/<job_id>.json`` per job (``{"expires_at", "record"}``), through core.from_storage.storage:
    a local directory or a ``gs://`` prefix alike."""

    def __init__(self, prefix: str, ttl_s: float):
        self.prefix = str(prefix).rstrip("/")
        self.ttl_s = ttl_s

    def location(self, job_id: str) -> str | None:
        """Where the job's record lives; None for an id that could name anything else."""
        return storage.join(self.prefix, f"{job_id}.json") if _JOB_ID.match(job_id) else None

    def save(self, record: dict) -> None:
        """Write the record whole (readers never see half of it); one writer per job."""
        location = self.location(record["job_id"])
        if location is None:
            raise ValueError(f"bad job id {record['job_id']!r}")
        self._before_save(location)
        body = json.dumps({"expires_at": time.time() + self.ttl_s, "record": record}).encode()
        storage.write_bytes(location, body, "application/json")

    def get(self, job_id: str) -> dict | None:
        """The record, or None when unknown or expired."""
        location = self.location(job_id)
        try:
            entry = json.loads(storage.read_bytes(location)) if location is not None else None
        except (storage.ObjectNotFound, ValueError):  # unknown, or removed while we read it
            return None
        if entry is None or entry["expires_at"] <= time.time():
            if entry is not None:
                self._expired(location)
            return None
        return entry["record"]

    def _spool_location(self, space: str, job_id: str) -> str:
        if not _JOB_ID.match(job_id) or not _JOB_ID.match(space.replace(".", "_")):
            raise ValueError(f"bad job id {job_id!r} or space {space!r}")
        return storage.join(self.prefix, "spool", space, job_id)

    def spool(self, space: str, job_id: str, data: bytes) -> None:
        storage.write_bytes(self._spool_location(space, job_id), data)

    def spooled(self, space: str, job_id: str) -> bytes | None:
        try:
            return storage.read_bytes(self._spool_location(space, job_id))
        except storage.ObjectNotFound:
            return None

    def spooled_ids(self, space: str) -> list[str]:
        folder = storage.join(self.prefix, "spool", space)
        return [uri.rsplit("/", 1)[-1] for uri in storage.list_prefix(folder)]

    def unspool(self, space: str, job_id: str, attempts: int) -> None:
        storage.delete(self._spool_location(space, job_id))
        for attempt in range(1, attempts + 1):
            storage.delete(self._claim_location(job_id, attempt))

    def _claim_location(self, job_id: str, attempt: int) -> str:
        return storage.join(self.prefix, "claims", f"{job_id}.{attempt}")

    def claim(self, job_id: str, attempt: int, owner: str) -> bool:
        return storage.write_bytes(self._claim_location(job_id, attempt), owner.encode(), if_absent=True)

    def _owner_location(self, owner: str) -> str:
        return storage.join(self.prefix, "owners", owner)

    def beat(self, owner: str, ttl_s: float) -> None:
        body = json.dumps({"expires_at": time.time() + ttl_s}).encode()
        storage.write_bytes(self._owner_location(owner), body, "application/json")

    def owner_alive(self, owner: str) -> bool:
        try:
            beat = json.loads(storage.read_bytes(self._owner_location(owner)))
            return beat["expires_at"] > time.time()
        except (storage.ObjectNotFound, ValueError, KeyError):
            return False

    def _before_save(self, location: str) -> None:
        """Hook: a store with a size cap makes room here."""

    def _expired(self, location: str) -> None:
        """Hook: a store that cleans up after itself removes the record here."""


def is_final(record: dict) -> bool:
    """Whether a job record needs nothing more: its callback delivered or given up (a record without
    a callback: its job ended)."""
    callback = record.get("callback")
    if callback is None:
        return record.get("status") in ("succeeded", "failed")
    return callback.get("state") in FINAL_DELIVERY


class DirectoryJobStore(ObjectJobStore):
    """One JSON file per job in a directory every process of the instance shares, capped in size
    and swept of expired records (a bucket has lifecycle rules for that; a disk does not). The cap
    removes the oldest finished records only: a job still running or still to be delivered is kept
    over the cap (their number is bounded by ASYNC_QUEUE per process), or it would be lost."""

    def __init__(self, directory: str | Path, ttl_s: float, max_records: int = MAX_DIRECTORY_RECORDS):
        super().__init__(str(directory), ttl_s)
        self.directory = Path(directory)
        self.max_records = max_records
        self._next_sweep = 0.0
        self.directory.mkdir(parents=True, exist_ok=True)

    def _before_save(self, location: str) -> None:
        if not Path(location).exists():  # a new job: make room first if the store is full
            self._make_room()

    def _expired(self, location: str) -> None:
        Path(location).unlink(missing_ok=True)

    def _make_room(self) -> None:
        """Remove expired records and heartbeats (once a minute), and the oldest finished records when the
        directory is full."""
        names = [name for name in os.listdir(self.directory) if name.endswith(".json") and not name.startswith(".")]
        if len(names) < self.max_records and time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_EVERY_S
        self._sweep_heartbeats()
        now, entries = time.time(), []
        for name in names:
            try:  # mtime is the last save: mtime + TTL is the record's expiry
                entries.append((os.stat(self.directory / name).st_mtime, name))
            except FileNotFoundError:
                continue  # removed by a sibling process meanwhile
        entries.sort()  # oldest first
        over = len(entries) - self.max_records + 1  # room for the new record
        for mtime, name in entries:
            if mtime + self.ttl_s <= now:  # expired: gone whatever its state
                (self.directory / name).unlink(missing_ok=True)
                over -= 1
            elif over > 0 and self._finished(name):
                (self.directory / name).unlink(missing_ok=True)
                over -= 1

    def _sweep_heartbeats(self) -> None:
        """Remove the heartbeat files of processes gone (one per process that ever ran here, else): an
        expired heartbeat and a missing one mean the same to ``owner_alive``."""
        owners = self.directory / "owners"
        for path in owners.iterdir() if owners.is_dir() else ():
            if not self.owner_alive(path.name):
                path.unlink(missing_ok=True)

    def _finished(self, name: str) -> bool:
        try:
            return is_final(json.loads((self.directory / name).read_bytes())["record"])
        except (OSError, ValueError, KeyError, TypeError):  # removed by a sibling meanwhile, or not ours
            return False


class GcsJobStore(ObjectJobStore):
    """One ``<prefix>/<job_id>.json`` object per job in Cloud Storage, shared by every instance
    (expired objects are left to the bucket's lifecycle rule)."""


def make_job_store(uri: str, ttl_s: float) -> JobStore:
    """The store JOB_STORE_URI names: file:// (one instance), redis:// or gs:// (all instances), memory://."""
    if uri.startswith(("redis://", "rediss://")):
        return RedisJobStore(uri, ttl_s)
    if uri.startswith("gs://"):
        return GcsJobStore(uri, ttl_s)
    if uri.startswith("memory://"):
        return MemoryJobStore(ttl_s)
    if uri.startswith("file://"):
        return DirectoryJobStore(storage.local_path(uri), ttl_s)
    raise ValueError(f"JOB_STORE_URI={uri!r}: expected one of {', '.join(SCHEMES)}")
