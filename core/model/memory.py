"""How much memory this container may use, and handing freed memory back to the OS (glibc).

- ``container_memory_limit`` reads the cgroup limit (v2 ``memory.max``, v1
  ``memory.limit_in_bytes``), falling back to physical RAM: Cloud Run enforces the cgroup limit
  and kills the whole instance when it is crossed.
- ``release_freed_memory`` calls ``malloc_trim(0)`` after a large request (a big decode or
  body): glibc otherwise keeps freed blocks in its arenas, and the issue measured 4.4 GiB still
  held after 16 large PNGs. The bench (bench/abuse_bench.py) measures the retained RSS with and
  without it (``MALLOC_TUNING=off`` turns it off, for that measurement only).

Measured and rejected: capping the arenas (``M_ARENA_MAX=2``) and fixing the mmap threshold at
1 MiB. They kept retained memory near zero, but a fixed threshold (and setting any threshold
turns glibc's dynamic one off) makes every tensor of 1 MiB or more in a model forward pass an
mmap, munmap and fresh page faults: side by side, the Whisper worker fell from 1.03x to 0.85x
the bare model on the long recording and the CLIP server from 0.80x to 0.70x at concurrency 32.
``malloc_trim`` after large requests alone keeps the abuse targets (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

log = logging.getLogger("core.model.memory")

_CGROUP_V2 = Path("/sys/fs/cgroup/memory.max")
_CGROUP_V1 = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
_UNLIMITED_V1 = 1 << 60  # v1 reports "no limit" as a huge page-rounded number


def _read_limit(path: Path) -> int | None:
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    if not raw or raw == "max":
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 0 < value < _UNLIMITED_V1 else None


def physical_memory() -> int:
    """Total RAM of the machine in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def container_memory_limit(v2: Path = _CGROUP_V2, v1: Path = _CGROUP_V1) -> int:
    """Bytes this container may use: cgroup v2, then v1, then physical RAM (the smaller)."""
    ram = physical_memory()
    limit = _read_limit(v2) or _read_limit(v1)
    return min(limit, ram) if limit else ram


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc only; musl has no mallopt/malloc_trim
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def release_freed_memory() -> bool:
    """Return free memory at the top of glibc's arenas to the OS (``malloc_trim(0)``)."""
    if _LIBC is None or os.environ.get("MALLOC_TUNING", "on") == "off":
        return False
    return bool(_LIBC.malloc_trim(0))
