"""`python -m inference_client transcribe DIR --workers URLS --out DIR [--format srt]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from inference_client.batch import transcribe_directory
from inference_client.errors import ConfigurationError
from inference_client.fanout import WorkerPool
from inference_client.whisper import RESPONSE_FORMATS


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m inference_client",
                                     description="Clients of the CLIP server and the Whisper worker.")
    commands = parser.add_subparsers(dest="command", required=True)
    transcribe = commands.add_parser(
        "transcribe", help="transcribe every audio/video file under DIR over one or more workers",
        description="Transcribe every audio/video file under DIR, spread over the workers. Files whose output "
                    "already exists are skipped, so an interrupted run resumes where it stopped. Exit status 0 "
                    "when every file is transcribed, 1 when some failed (listed in OUT/failures.tsv).")
    transcribe.add_argument("input_dir", type=Path, metavar="DIR")
    transcribe.add_argument("--workers", default=os.environ.get("WORKER_URLS"),
                            help="comma-separated worker URLs (default: $WORKER_URLS)")
    transcribe.add_argument("--out", type=Path, required=True, help="output directory (mirrors DIR's folders)")
    transcribe.add_argument("--format", default="json", choices=RESPONSE_FORMATS, dest="response_format")
    transcribe.add_argument("--api-key", default=os.environ.get("WHISPER_WORKER_API_KEY"),
                            help="sent as X-API-Key (default: $WHISPER_WORKER_API_KEY)")
    transcribe.add_argument("--language", help="ISO 639-1 code (default: detected)")
    transcribe.add_argument("--concurrency", type=int, default=None,
                            help="requests in flight in all (default: 4 per worker, so batches can fill)")
    transcribe.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one answer")
    transcribe.add_argument("--attempts", type=int, default=5, help="tries per file on 429/503/connection errors")
    transcribe.add_argument("--max-wait", type=float, default=300.0,
                            help="seconds a file waits while every worker is out before it fails")
    transcribe.add_argument("--overwrite", action="store_true", help="transcribe again files that have an output")
    transcribe.add_argument("--no-progress", action="store_true", help="no progress bar (plain lines instead)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if not args.input_dir.is_dir():
        print(f"error: {args.input_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        pool = WorkerPool(args.workers or "", args.api_key, timeout=args.timeout, max_attempts=args.attempts,
                          max_wait_s=args.max_wait)
    except ConfigurationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.concurrency is not None and args.concurrency < 1:
        print("error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    options = {"language": args.language} if args.language else {}
    try:
        summary = transcribe_directory(pool, args.input_dir, args.out, response_format=args.response_format,
                                       concurrency=args.concurrency, overwrite=args.overwrite,
                                       progress=not args.no_progress, options=options)
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; run the same command again to resume", file=sys.stderr)
        return 130
    line = (f"transcribed {len(summary.transcribed)}, skipped {len(summary.skipped)} (output exists), "
            f"failed {len(summary.failed)}")
    if summary.failures_file:
        print(f"{line}; failures listed in {summary.failures_file}", file=sys.stderr)
        for name, reason in sorted(summary.failed.items()):
            print(f"  {name}: {reason}", file=sys.stderr)
        return 1
    print(line, file=sys.stderr)
    return 0
