"""`make soak` = `python -m bench.soak [--minutes 30] [--users 16]`: RSS slope under steady mixed traffic.

Starts the CLIP server (the demo model by default: real torch, the real open_clip tokenizer, fast
enough on a CPU for a hundred requests a second), drives it with locust (bench/soak/locustfile.py, headless) and samples
the resident memory of the server's whole process tree every ``--sample-s`` seconds. After the
warm-up (the first ``--warmup`` minutes: imports, first batches, caches filling, allocator arenas
growing to their working size), it fits a least-squares line to the samples and reports its
slope in MiB per hour. Target: at most 10 MiB an hour. On demand only, never in CI: it runs for
half an hour.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import ROOT, python, serve, tree_rss
from tests.media import encode, photo_like

TARGET_MIB_PER_HOUR = 10.0


def write_payloads(directory: Path) -> None:
    """32 distinct 224-px-ish JPEGs and 4 distinct 12 MP photos."""
    for n in range(32):
        (directory / f"small-{n}.jpg").write_bytes(encode(photo_like(256 + n, 224 + n, seed=n), "JPEG"))
    for n in range(4):
        (directory / f"large-{n}.jpg").write_bytes(encode(photo_like(4000, 3000, seed=100 + n), "JPEG", quality=90))


def slope_mib_per_hour(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, bytes) samples, in MiB per hour."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_b = sum(b for _, b in samples) / n
    covariance = sum((t - mean_t) * (b - mean_b) for t, b in samples)
    variance = sum((t - mean_t) ** 2 for t, _ in samples)
    return covariance / variance * 3600 / 2 ** 20 if variance else 0.0


def locust_totals(stats_csv: Path) -> tuple[int, int]:
    """(requests, failures) from locust's aggregated stats."""
    with open(stats_csv) as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                return int(row["Request Count"]), int(row["Failure Count"])
    return 0, 0


def main(argv: list[str] | None = None) -> int:
    """Run the soak; prints the RSS table and the slope; exit 1 if the slope misses the target."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--minutes", type=float, default=30.0, help="traffic duration (default 30)")
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes left out of the slope (default 5)")
    parser.add_argument("--users", type=int, default=16, help="concurrent locust users (default 16)")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--model", default="demo", help="CLIP_MODEL for the server (default: the demo model, "
                        "a real torch model and open_clip tokenizer that keeps up with the traffic on a CPU)")
    parser.add_argument("--checkout", type=Path, default=ROOT,
                        help="run the server from this checkout (a worktree of an older commit: before and after)")
    args = parser.parse_args(argv)
    payloads = Path(tempfile.mkdtemp(prefix="soak-payloads-"))
    write_payloads(payloads)
    env = {"CLIP_MODEL": args.model, "WEB_THREADS": str(args.users), "MAX_QUEUE": "1024", "RATE_LIMIT": ""}
    samples: list[tuple[float, int]] = []
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    with serve([python(), "-m", "server"], env, "soak-server", cwd=args.checkout) as (port, pid):
        locust = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")), "--headless",
             "-u", str(args.users), "-r", str(args.users), "-t", f"{int(args.minutes * 60)}s",
             "--host", f"http://127.0.0.1:{port}", "--csv", str(results / "soak"), "--only-summary",
             "--stop-timeout", "10"],
            cwd=ROOT, env={**os.environ, "SOAK_PAYLOADS": str(payloads)},
            stdout=open(results / "soak-locust.log", "wb"), stderr=subprocess.STDOUT)
        started = time.monotonic()
        while locust.poll() is None:
            elapsed = time.monotonic() - started
            samples.append((elapsed, tree_rss(pid)))
            if len(samples) % max(1, int(60 / args.sample_s)) == 0:
                print(f"  minute {elapsed / 60:5.1f}: {samples[-1][1] / 2 ** 20:7.1f} MiB", flush=True)
            time.sleep(args.sample_s)
    requests_sent, failures = locust_totals(results / "soak_stats.csv")
    steady = [(t, b) for t, b in samples if t >= args.warmup * 60]
    if len(steady) < 3:
        print("too short to measure a slope: run longer than the warm-up", file=sys.stderr)
        return 2
    slope = slope_mib_per_hour(steady)
    rows = [(t, b) for t, b in samples if int(t) % 300 < args.sample_s or (t, b) == samples[-1]]
    print(f"\n#### Soak: {args.minutes:g} min of mixed CLIP traffic ({args.model}, {args.users} locust users, "
          f"server from {args.checkout})\n")
    print(f"{requests_sent:,} requests, {failures:,} failures. RSS of the server's process tree:\n")
    print("| minute | RSS MiB |\n|---:|---:|")
    for t, b in rows:
        print(f"| {t / 60:.0f} | {b / 2 ** 20:.0f} |")
    verdict = "met" if slope <= TARGET_MIB_PER_HOUR else "MISSED"
    print(f"\nSlope after the {args.warmup:g}-minute warm-up: **{slope:+.1f} MiB/hour** "
          f"(target <= {TARGET_MIB_PER_HOUR:g}: {verdict}); peak {max(b for _, b in samples) / 2 ** 20:.0f} MiB.")
    return 0 if slope <= TARGET_MIB_PER_HOUR and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
