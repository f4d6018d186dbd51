"""Where a served /embed request holds the GIL: ``python -m bench.gil_profile [--seconds N]``.

One gunicorn process with the simulated accelerator (``CLIP_MODEL=sim:ViT-B-32``, L4 timing) is
loaded with 224-px PNGs at concurrency 64 while py-spy samples only the thread holding the GIL
(``--gil``). Each sample is charged to the innermost frame of its stack that belongs to a known
part of the request path; the table gives GIL milliseconds per request by part. The GIL is what
one process cannot spread over more cores, so this is what caps a process's requests per second.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.feed_bench import CONCURRENCY, L4_TIMING, make_pngs
from bench.harness import drive, multipart, python, serve

SAMPLES_PER_S = 250
# (part, substrings of a frame's "function (file:line)" text), innermost match wins.
PARTS = [
    ("image decode + preprocess", ("server/images.py", "PIL/", "backends/")),
    ("multipart parse (core/web/multipart.py)", ("core/web/multipart.py", "core/web/uploads.py", "formparser",
                                              "_load_form_data")),
    ("batcher and runner", ("core/model/batcher.py", "core/model/runner.py", "concurrent/futures", "queue.py")),
    ("JSON / base64 encoding", ("core/web/encoding.py", "orjson", "json/")),
    ("metrics, logging, auth and limits", ("core/web/metrics.py", "prometheus_client", "logging/", "core/web/logs.py",
                                           "core/web/auth.py", "core/web/limits.py", "core/web/body_limits.py",
                                           "core/model/admission.py", "flask_limiter", "limits/")),
    ("gunicorn HTTP (read, parse headers, write)", ("gunicorn/http", "gunicorn/workers", "socket", "selectors")),
    ("Flask/werkzeug request and response", ("flask/", "werkzeug/")),
]
REQUEST_THREADS = ("ThreadWorker", "Batcher", "_worker (concurrent")


def part_of(frames: list[str]) -> str:
    """The part a sampled stack belongs to."""
    if not any(marker in frame for frame in frames for marker in REQUEST_THREADS):
        return "gunicorn main loop and other threads"
    for frame in reversed(frames):
        for part, keys in PARTS:
            if any(key in frame for key in keys):
                return part
    return "other"


def profile(seconds: float) -> str:
    """Load one process for ``seconds`` under py-spy --gil; returns the markdown table."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    pngs = make_pngs(64)
    bodies = [multipart("image", "photo.png", pngs[n % len(pngs)]) for n in range(640)]
    scratch = Path(tempfile.mkdtemp(prefix="gil-profile-"))
    env = {"CLIP_MODEL": "sim:ViT-B-32", "SIM_LOCK_PATH": str(scratch / "sim.lock"), "WEB_WORKERS": "1",
           "WEB_THREADS": str(CONCURRENCY), "MAX_QUEUE": "1024", **L4_TIMING}
    raw = scratch / "gil.txt"
    try:
        with serve([python(), "-m", "server"], env, "gil-profile") as (port, pid):
            drive(port, "/embed", bodies[:128], CONCURRENCY)  # warm-up
            sampler = subprocess.Popen([spy, "record", "--gil", "--subprocesses", "--nonblocking", "-r",
                                        str(SAMPLES_PER_S), "-f", "raw", "-o", str(raw), "-p", str(pid),
                                        "-d", str(int(seconds))],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started, served = time.monotonic(), 0
            while time.monotonic() - started < seconds:
                served += len(drive(port, "/embed", bodies, CONCURRENCY).latencies_s)
            sampler.wait()
        totals: collections.Counter[str] = collections.Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            totals[part_of(stack.split(";"))] += int(count)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    all_samples = sum(totals.values())
    per_request_ms = {part: samples / SAMPLES_PER_S / served * 1000 for part, samples in totals.items()}
    lines = [f"#### GIL held per served /embed request, one process, simulated L4, concurrency {CONCURRENCY}", "",
             f"{served} requests in {seconds:.0f} s; py-spy --gil at {SAMPLES_PER_S} Hz; "
             f"{sum(per_request_ms.values()):.2f} ms of GIL per request in all.", "",
             "| part | GIL ms / request | share |", "|---|---:|---:|"]
    for part, samples in totals.most_common():
        lines.append(f"| {part} | {per_request_ms[part]:.2f} | {samples / all_samples:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to sample under load")
    print(profile(parser.parse_args().seconds))


if __name__ == "__main__":
    main()
