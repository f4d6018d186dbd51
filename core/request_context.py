"""One request context, opened by every door: HTTP, callback_url jobs, events and batch-job items.

A door opens one (``with opened("callback"): ...``) around the work it hands the app's service;
everything below reads it here rather than from a framework global:

- the runner takes the request's one deadline from it (every stage of a request shares it);
- the runner's jobs append their batch sizes to it (for the door's log line);
- the services count what they really processed into it (images, texts, audio seconds), once per
  input, and each count is passed to the observers (core/web/metrics.py labels it with the door).

It is a ``contextvars.ContextVar``: it follows a request through its own thread, never into
another one (a callback job's thread opens its own, with door ``callback``).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

DOORS = ("http", "callback", "event", "job")


@dataclass
class RequestContext:
    """What one request carries from its door down to the model and back to logs and metrics."""

    door: str
    deadline: float | None = None  # time.monotonic(); set by the first stage that needs it
    batch_sizes: list[int] = field(default_factory=list)
    inputs: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def deadline_for(self, timeout_s: float) -> float:
        """The request's one deadline: ``timeout_s`` from its first stage, then the same for every stage."""
        if self.deadline is None:
            self.deadline = time.monotonic() + timeout_s
        return self.deadline


# Called with (context, counts) for each count recorded; core/web/metrics.py adds one.
Observer = Callable[[RequestContext, dict], None]
_observers: list[Observer] = []
_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("request_context", default=None)


def observe(observer: Observer) -> None:
    """Have ``observer(context, counts)`` called for every count recorded (idempotent)."""
    if observer not in _observers:
        _observers.append(observer)


def current() -> RequestContext | None:
    """The context of the request this thread is serving, or None outside any door."""
    return _current.get()


def open_context(door: str) -> contextvars.Token:
    """Open a context on this thread (the HTTP layer's before_request); close it with ``close``."""
    if door not in DOORS:
        raise ValueError(f"unknown door {door!r}; one of {DOORS}")
    return _current.set(RequestContext(door))


def close(token: contextvars.Token) -> None:
    """Close the context ``open_context`` opened, restoring the one before it."""
    _current.reset(token)


@contextlib.contextmanager
def opened(door: str) -> Iterator[RequestContext]:
    """A fresh context for one request through ``door`` for the duration of the block."""
    token = open_context(door)
    try:
        yield _current.get()
    finally:
        close(token)


def deadline(timeout_s: float) -> float:
    """The current request's deadline (see ``RequestContext.deadline_for``); outside one, ``timeout_s`` from now."""
    context = _current.get()
    if context is None:
        return time.monotonic() + timeout_s
    return context.deadline_for(timeout_s)


def batch_sizes() -> list[int]:
    """The list the current request's batch sizes go to (a throwaway one outside any door)."""
    context = _current.get()
    return context.batch_sizes if context is not None else []


def count(**counts: float) -> None:
    """Record inputs the service processed for the current request (images=1, audio_seconds=12.5, ...)."""
    context = _current.get()
    if context is None:
        return  # no door (a script calling the service directly): nothing to log or meter
    for name, amount in counts.items():
        context.inputs[name] = context.inputs.get(name, 0) + amount
    for observer in _observers:
        observer(context, counts)
