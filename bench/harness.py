"""Shared benchmark plumbing: start servers, drive concurrent clients, sample RSS, print tables.

Everything is measured side by side in one run on the same machine, and each configuration is
repeated; the tables quote medians, and ratios between medians, because this machine is shared
and single timings are noisy.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_processes(pid: int) -> list[psutil.Process]:
    """A process and all its live descendants (none once it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _tree_sum(pid: int, measure) -> float:
    total = 0.0
    for proc in tree_processes(pid):
        try:
            total += measure(proc)
        except psutil.Error:
            pass  # it ended between the listing and the reading
    return total


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    return int(_tree_sum(pid, lambda proc: proc.memory_info().rss))


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds so far of a process and all its live descendants."""
    return _tree_sum(pid, lambda proc: sum(proc.cpu_times()[:2]))


class RssSampler:
    """Peak resident memory of a process and its children, sampled every ``interval_s``."""

    def __init__(self, pid: int | None = None, interval_s: float = 0.05):
        self.pid = pid or os.getpid()
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(self.interval_s)

    def __enter__(self):
        self.peak = tree_rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


@contextmanager
def started(argv: list[str], env: dict[str, str], name: str, ready: Callable[[], bool], timeout_s: float = 300,
            cwd: Path = ROOT) -> Iterator[subprocess.Popen]:
    """Start a process (its own process group, output in bench/results/NAME.log), wait until
    ``ready()``, yield it; SIGTERM to the group at the end (SIGKILL after 20 s)."""
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    log = open(ROOT / "bench" / "results" / f"{name.replace(' ', '_')}.log", "wb")
    process = subprocess.Popen(argv, cwd=cwd, env={**os.environ, "LOG_LEVEL": "WARNING", **env},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited early; see bench/results/{name}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready in {timeout_s} s")
            time.sleep(0.25)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@contextmanager
def serve(argv: list[str], env: dict[str, str], name: str, ready_path: str = "/health", timeout_s: float = 300,
          cwd: Path = ROOT):
    """Start a server process (in checkout ``cwd``) on a free port; yields (port, pid) once
    ``ready_path`` answers 200."""
    port = free_port()
    argv = [part.replace("{port}", str(port)) for part in argv]

    def ready() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", ready_path)
            return conn.getresponse().status == 200
        except OSError:
            return False

    with started(argv, {"PORT": str(port), **env}, name, ready, timeout_s, cwd) as process:
        yield port, process.pid


def run_bare(which: str, arguments: dict) -> tuple[dict, float]:
    """Run a bare-model baseline (bench/bare.py) in its own process: (its JSON result, peak RSS MB)."""
    import json

    process = subprocess.Popen([sys.executable, "-m", "bench.bare", which, json.dumps(arguments)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    with RssSampler(process.pid) as rss:
        out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bench.bare {which} failed")
    return json.loads(out.strip().splitlines()[-1]), rss.peak_mb


def multipart(field_name: str, filename: str, data: bytes, extra: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body built once, so the client spends no CPU on it per request."""
    boundary = uuid.uuid4().hex
    parts = []
    for key, value in (extra or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class LoadResult:
    """One load run: wall time and per-request latencies."""

    wall_s: float
    latencies_s: list[float]
    errors: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies_s) / self.wall_s


def drive(port: int, path: str, bodies: list[tuple[bytes, str]], concurrency: int) -> LoadResult:
    """POST every body once with ``concurrency`` keep-alive clients; all must answer 200."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    next_index = iter(range(len(bodies)))

    def client():
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            body, content_type = bodies[index]
            started = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            with lock:
                if response.status == 200:
                    latencies.append(elapsed)
                else:
                    errors += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = LoadResult(time.perf_counter() - started, latencies, errors)
    if errors:
        raise RuntimeError(f"{errors} requests failed against :{port}{path}")
    return result


@dataclass
class Row:
    """One table row: repeated measurements of a configuration."""

    label: str
    rates: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    peak_mb: float = 0.0

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def percentile(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def record(row: Row, outcome: LoadResult | float) -> None:
    """Add one measurement to a row (a float is a rate with no latencies)."""
    if isinstance(outcome, LoadResult):
        row.rates.append(outcome.rate)
        row.latencies_s.extend(outcome.latencies_s)
    else:
        row.rates.append(outcome)


def interleave(repeats: int, runs: list[tuple[Row, Callable[[], LoadResult | float]]]) -> None:
    """Measure every configuration once per round, ``repeats`` rounds.

    Round-robin rather than all repeats of one configuration then the next: this machine is
    shared, its speed drifts over minutes, and a drift must not land on one configuration only.
    """
    for round_number in range(1, repeats + 1):
        for row, run in runs:
            record(row, run())
            print(f"  round {round_number}: {row.label}: {row.rates[-1]:.2f}", flush=True)


def table(title: str, unit: str, rows: list[Row], baseline: Row) -> str:
    """Markdown table: rate (median of repeats), ratio to ``baseline``, p50/p99 latency, peak RSS."""
    lines = [f"#### {title}", "", f"| configuration | {unit} (median) | vs {baseline.label.split(',')[0]} "
             "| p50 ms | p99 ms | peak RSS MB |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        p50, p99 = row.percentile(50), row.percentile(99)

        def ms(value):
            return f"{value * 1000:.0f}" if value is not None else "-"

        rss = f"{row.peak_mb:.0f}" if row.peak_mb else "-"
        lines.append(f"| {row.label} | {row.rate:.2f} | {row.rate / baseline.rate:.2f}x | {ms(p50)} | {ms(p99)} "
                     f"| {rss} |")
    return "\n".join(lines)


def target(description: str, value: float, goal: float) -> str:
    """One line saying whether a ratio target is met."""
    verdict = "met" if value >= goal else f"MISSED by {(goal - value) / goal:.0%}"
    return f"- {description}: **{value:.2f}x** (target >= {goal}x: {verdict})"


def python() -> str:
    """The interpreter running the benchmark (the project's venv under `make bench`)."""
    return sys.executable
