"""Which request-handling processes of this instance serve: one marker file per ready process.

gunicorn's master points ``MODEL_READY_DIR`` at a fresh directory (core/gunicorn_conf.py); a
process writes ``<pid>`` there once its model is warm and removes it when it exits. A process
still loading asks ``another_serves()``: when a sibling already serves, the instance has passed
its startup probe and traffic is arriving, so a request that lands here waits for the model
(within its deadline) instead of answering 503 (docs/reliability.md says why this over an
instance-wide /health). Outside gunicorn (tests, one process) nothing is shared and nothing waits.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

READY_DIR_ENV = "MODEL_READY_DIR"


def _directory() -> Path | None:
    path = os.environ.get(READY_DIR_ENV)
    return Path(path) if path else None


def mark_ready() -> None:
    """This process serves (removed again at exit)."""
    directory = _directory()
    if directory is None:
        return
    marker = directory / str(os.getpid())
    marker.touch()
    atexit.register(marker.unlink, missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def another_serves() -> bool:
    """True when another live process of this instance has its model warm."""
    directory = _directory()
    if directory is None:
        return False
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return False
    me = os.getpid()
    # A SIGKILLed process leaves its marker behind: a dead pid does not count.
    return any(name.isdigit() and int(name) != me and _alive(int(name)) for name in names)
