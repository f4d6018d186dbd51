"""`python -m inference_client transcribe DIR --workers URLS --out DIR` and `... embed DIR --servers URLS`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from inference_client.batch import transcribe_directory
from inference_client.embed_folder import VECTORS_FILE, default_servers, embed_directory
from inference_client.errors import ConfigurationError
from inference_client.fanout import WorkerPool
from inference_client.whisper import RESPONSE_FORMATS


def _pool_options(command: argparse.ArgumentParser, key_env: str, timeout_s: float) -> None:
    """The options both folder commands share: key, concurrency, timeouts, retries, progress."""
    command.add_argument("--api-key", default=os.environ.get(key_env), help=f"sent as X-API-Key (default: ${key_env})")
    command.add_argument("--concurrency", type=int, default=None, help="requests in flight in all (default: see above)")
    command.add_argument("--timeout", type=float, default=timeout_s, help="seconds to wait for one answer")
    command.add_argument("--attempts", type=int, default=5, help="tries per file on 429/503/connection errors")
    command.add_argument("--max-wait", type=float, default=300.0,
                         help="seconds a file waits while every server is out before it fails")
    command.add_argument("--no-progress", action="store_true", help="no progress bar (plain lines instead)")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m inference_client",
                                     description="Clients of the CLIP server and the Whisper worker.")
    commands = parser.add_subparsers(dest="command", required=True)
    transcribe = commands.add_parser(
        "transcribe", help="transcribe every audio/video file under DIR over one or more workers",
        description="Transcribe every audio/video file under DIR, spread over the workers (4 requests in flight "
                    "per worker by default, so batches can fill). Files whose output already exists are skipped, "
                    "so an interrupted run resumes where it stopped. Exit status 0 when every file is transcribed, "
                    "1 when some failed (listed in OUT/failures.tsv).")
    transcribe.add_argument("input_dir", type=Path, metavar="DIR")
    transcribe.add_argument("--workers", default=os.environ.get("WORKER_URLS"),
                            help="comma-separated worker URLs (default: $WORKER_URLS)")
    transcribe.add_argument("--out", type=Path, required=True, help="output directory (mirrors DIR's folders)")
    transcribe.add_argument("--format", default="json", choices=RESPONSE_FORMATS, dest="response_format")
    transcribe.add_argument("--language", help="ISO 639-1 code (default: detected)")
    transcribe.add_argument("--overwrite", action="store_true", help="transcribe again files that have an output")
    _pool_options(transcribe, "WHISPER_WORKER_API_KEY", 600.0)
    embed = commands.add_parser(
        "embed", help="embed every image under DIR over one or more CLIP servers into vectors.jsonl",
        description=f"Embed every image under DIR, spread over the CLIP servers (requests in flight: the sum of "
                    f"their batch sizes, from /health). One JSON line per image in OUT (default DIR/{VECTORS_FILE}): "
                    "path relative to DIR, model, vector. Images already in OUT are skipped, so an interrupted run "
                    "resumes where it stopped. Photos are downscaled before upload to what the model sees. Exit "
                    "status 0 when every image is embedded, 1 when some failed (listed beside OUT).")
    embed.add_argument("input_dir", type=Path, metavar="DIR")
    embed.add_argument("--servers", default=default_servers(),
                       help="comma-separated CLIP server URLs (default: $CLIP_SERVER_URLS, else $CLIP_SERVER_URL)")
    embed.add_argument("--out", type=Path, default=None, help=f"the JSON Lines file (default: DIR/{VECTORS_FILE})")
    embed.add_argument("--no-resize", action="store_true", help="upload the original bytes (no downscaling)")
    _pool_options(embed, "CLIP_SERVER_API_KEY", 120.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if not args.input_dir.is_dir():
        print(f"error: {args.input_dir} is not a directory", file=sys.stderr)
        return 2
    if args.concurrency is not None and args.concurrency < 1:
        print("error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    urls = args.workers if args.command == "transcribe" else args.servers
    if args.command == "embed" and not urls:
        print("error: no CLIP server URLs: pass --servers URL1,URL2 or set CLIP_SERVER_URLS", file=sys.stderr)
        return 2
    try:
        pool = WorkerPool(urls or "", args.api_key or "", timeout=args.timeout, max_attempts=args.attempts,
                          max_wait_s=args.max_wait)
    except ConfigurationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if args.command == "transcribe":
            options = {"language": args.language} if args.language else {}
            summary = transcribe_directory(pool, args.input_dir, args.out, response_format=args.response_format,
                                           concurrency=args.concurrency, overwrite=args.overwrite,
                                           progress=not args.no_progress, options=options)
            line = (f"transcribed {len(summary.transcribed)}, skipped {len(summary.skipped)} (output exists), "
                    f"failed {len(summary.failed)}")
        else:
            summary = embed_directory(pool, args.input_dir, args.out, concurrency=args.concurrency,
                                      resize=not args.no_resize, progress=not args.no_progress)
            line = (f"embedded {len(summary.embedded)}, skipped {len(summary.skipped)} (already in the file), "
                    f"failed {len(summary.failed)}")
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; run the same command again to resume", file=sys.stderr)
        return 130
    if summary.failures_file:
        print(f"{line}; failures listed in {summary.failures_file}", file=sys.stderr)
        for name, why in sorted(summary.failed.items()):
            print(f"  {name}: {why}", file=sys.stderr)
        return 1
    print(line, file=sys.stderr)
    return 0
