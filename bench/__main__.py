"""`make bench` = `python -m bench [WHICH] [--repeats N]`: prints the tables (markdown); WHICH is one of
clip, whisper, job, fanout, feed, admission, abuse, photos, textembed, images or all (the default).

`python -m bench images` (make bench-images) measures the built images; it needs `make images`
and root (buildah), so `all` leaves it out and says so.

The tables are also written to bench/results/latest.md (not committed); docs/performance.md records a run.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from bench import (
    abuse_bench,
    admission_bench,
    clip_bench,
    fanout_bench,
    feed_bench,
    images_bench,
    job_bench,
    photo_bench,
    textembed_bench,
    whisper_bench,
)


def main() -> None:
    """Run the chosen benchmarks side by side and print their tables."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("which", nargs="?", default="all",
                        choices=("all", "clip", "whisper", "job", "fanout", "feed", "admission", "abuse", "photos",
                                 "textembed",
                                 "images"))
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (medians are quoted)")
    args = parser.parse_args()
    started = time.time()
    sections = [f"Benchmark run {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()}, "
                f"{os.cpu_count()} CPUs, Python {platform.python_version()}; medians of {args.repeats} runs."]
    if args.which in ("all", "clip"):
        sections.append(clip_bench.run(args.repeats))
    if args.which in ("all", "whisper"):
        sections.append(whisper_bench.run(args.repeats))
    if args.which in ("all", "job"):
        sections.append(job_bench.run(args.repeats))
    if args.which in ("all", "fanout"):
        sections.append(fanout_bench.run(args.repeats))
    if args.which in ("all", "feed"):
        sections.append(feed_bench.run(args.repeats))
    if args.which in ("all", "admission"):
        sections.append(admission_bench.run(args.repeats))
    if args.which in ("all", "photos"):
        sections.append(photo_bench.run(args.repeats))
    if args.which in ("all", "textembed"):
        sections.append(textembed_bench.run(args.repeats))
    if args.which in ("all", "abuse"):
        sections.append(abuse_bench.run(args.repeats))
    if args.which == "images":
        sections.append(images_bench.run(args.repeats))
    elif args.which == "all":
        sections.append("(The images table needs built images: `make images && python -m bench images`.)")
    report = "\n\n".join(sections) + f"\n\n(total {time.time() - started:.0f} s)\n"
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "latest.md").write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
