"""Async job records behind one small interface: in this process's memory, or in Redis.

A record is a JSON-ready dict (``job_id``, ``status``, times, ``result``, ``callback``) kept for
``JOB_TTL`` seconds after its last change. Each job has one writer (the process that accepted
it), so ``save`` replaces the whole record and needs no transaction.

The memory store is per process: records vanish when the instance stops, and with several
gunicorn workers or instances a GET may land where the job is unknown. Redis (the same
``RATE_LIMIT_STORAGE_URI`` as the rate limits) shares them.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Protocol

KEY_PREFIX = "inference-job:"


class JobStore(Protocol):
    """Where job records live."""

    def save(self, record: dict) -> None:
        """Store ``record`` under ``record['job_id']`` for the TTL."""

    def get(self, job_id: str) -> dict | None:
        """The record, or None when unknown or expired."""


class MemoryJobStore:
    """Records in a dict of this process, expired lazily."""

    def __init__(self, ttl_s: float, clock=time.monotonic):
        self.ttl_s = ttl_s
        self._clock = clock
        self._records: dict[str, tuple[float, str]] = {}
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


def make_job_store(storage_uri: str, ttl_s: float) -> JobStore:
    """Redis when the rate-limit storage URI is redis:// or rediss://, else this process's memory."""
    if storage_uri.startswith(("redis://", "rediss://")):
        return RedisJobStore(storage_uri, ttl_s)
    return MemoryJobStore(ttl_s)
