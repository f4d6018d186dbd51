"""How much memory this container may use, and handing freed memory back to the OS (glibc).

- ``container_memory_limit`` reads the cgroup limit (v2 ``memory.max``, v1
  ``memory.limit_in_bytes``), falling back to physical RAM: Cloud Run enforces the cgroup limit
  and kills the whole instance when it is crossed.
- ``tune_malloc`` caps glibc's malloc arenas and fixes the mmap threshold. With 16-32 request
  threads glibc creates up to 8 x cores arenas, and its *dynamic* mmap threshold rises after the
  first large free, so later image and audio buffers (Pillow allocates 16 MiB blocks) land in
  arenas that are never returned: the issue measured 4.4 GiB still held after 16 large PNGs.
  A fixed threshold keeps every buffer >= 1 MiB in its own mapping, unmapped on free.
- ``release_freed_memory`` calls ``malloc_trim(0)`` after a large request for what remains
  in the arenas. The bench (bench/abuse_bench.py) measures the retained RSS with and without
  (``MALLOC_TUNING=off`` turns all three off, for that measurement only).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

log = logging.getLogger("core.memory")

# mallopt() parameter numbers from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# Allocations at or above this size get their own mmap and go back to the OS on free. 1 MiB
# costs nothing measurable (a decoded 224 px image is 0.6 MiB) and covers every image/PCM buffer.
MMAP_THRESHOLD_BYTES = 1024 * 1024
ARENA_MAX = 2  # two arenas: request threads contend a little on malloc, memory stays bounded
TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024

# The same choices as environment variables, for processes started by our launcher (they apply
# from the first allocation; tune_malloc repeats them in each worker in case another launcher ran it).
MALLOC_ENV = {
    "MALLOC_ARENA_MAX": str(ARENA_MAX),
    "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES),
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES),
}

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


def tune_malloc() -> bool:
    """Apply the arena cap and fixed mmap/trim thresholds to this process; False off glibc."""
    if _LIBC is None or os.environ.get("MALLOC_TUNING", "on") == "off":  # off: only to measure it
        return False
    ok = all(_LIBC.mallopt(param, value) == 1 for param, value in (
        (M_ARENA_MAX, ARENA_MAX), (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)))
    if not ok:
        log.warning("mallopt refused a setting; freed memory may stay in malloc arenas")
    return ok


def release_freed_memory() -> bool:
    """Return free memory at the top of glibc's arenas to the OS (``malloc_trim(0)``)."""
    if _LIBC is None or os.environ.get("MALLOC_TUNING", "on") == "off":
        return False
    return bool(_LIBC.malloc_trim(0))


def malloc_env(environ: dict | None = None) -> dict[str, str]:
    """MALLOC_* variables to add to a child's environment (values already set win)."""
    environ = os.environ if environ is None else environ
    if environ.get("MALLOC_TUNING", "on") == "off":
        return {}
    return {name: value for name, value in MALLOC_ENV.items() if name not in environ}
