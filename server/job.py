"""``python -m server.job --input SRC --output DST``: embed every image of SRC in a Cloud Run Jobs task.

Output: one JSONL shard per task, ``DST/part-00003-of-00010.jsonl``, one ``{"path", "embedding"}``
line per image in listing order (``path`` as listed), and ``DST/failures/part-....jsonl`` for what
failed. The shard is rewritten atomically every ``JOB_CHECKPOINT_EVERY`` images, so a task that is
killed and retried starts after the last checkpoint; exit status 1 when anything failed, so
``--max-retries`` retries the task.
"""

from __future__ import annotations

import dataclasses
import json
import time

from core import batch_job, storage
from core.backend import ModelRunner
from core.logs import configure_logging
from server.backends import make_backend
from server.service import ClipService
from server.settings import ServerSettings

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
CHECKPOINT_EVERY_S = 60.0  # also checkpoint at least this often, however slow the images
# A job has no request latency to protect, so MAX_BATCH_SIZE=auto means the largest batch that
# still pays on a CPU too (the bare model's best on this project's bench); a GPU's auto is 32 anyway.
JOB_BATCH_SIZE = 32


def start_service(settings: ServerSettings) -> ClipService:
    """The same backend, runner and batcher as the HTTP server, ready to embed."""
    backend = make_backend(settings)
    backend.check_weights()
    runner = ModelRunner(backend, settings, name="clip").start()
    batch_job.wait_until_ready(runner)
    return ClipService(runner, settings, memory_budget=batch_job.memory_budget(settings))


def read_shard(location: str) -> dict[str, str]:
    """path -> its JSONL line, from an earlier attempt's checkpoint (empty when there is none)."""
    if not storage.exists(location):
        return {}
    lines = storage.read_bytes(location).decode("utf-8").splitlines()
    return {json.loads(line)["path"]: line for line in lines if line.strip()}


def main(argv: list[str] | None = None) -> int:
    """Embed this task's shard of the inputs; returns the exit status."""
    parser = batch_job.common_arguments("python -m server.job", __doc__.splitlines()[0])
    parser.add_argument("--checkpoint-every", type=int, default=500,
                        help="rewrite the shard after this many new embeddings (resume point)")
    args = parser.parse_args(argv)
    batch_job.require_locations(parser, args)
    settings = ServerSettings.from_env()
    if settings.max_batch_size is None:
        settings = dataclasses.replace(settings, max_batch_size=JOB_BATCH_SIZE)
    configure_logging(settings.log_level)
    shard = batch_job.Shard.from_env()
    inputs = shard.take(batch_job.list_inputs(args.input, IMAGE_SUFFIXES))
    part = storage.join(args.output, f"{shard.name}.jsonl")
    done = read_shard(part)
    todo = [(location, name) for location, name in inputs if name not in done]
    failures: list[dict] = []
    service = start_service(settings) if todo else None
    # Started after the model is ready: the rate it reports is the task's steady throughput.
    progress = batch_job.Progress(len(inputs), shard, unit="images", already_done=len(inputs) - len(todo))
    if service is not None:
        max_bytes = int(settings.max_request_mb * 1024 * 1024)
        workers = args.workers or 2 * service.runner.batcher.max_batch_size
        last_checkpoint = [time.monotonic(), len(done)]

        def embed_one(item: tuple[str, str]) -> list[float]:
            return service.embed([storage.read_bytes(item[0], max_bytes)], [])["embedding"]

        def finished(item: tuple[str, str], embedding, error: BaseException | None) -> None:
            if error is None:
                done[item[1]] = json.dumps({"path": item[1], "embedding": embedding})
            else:
                failures.append(batch_job.error_record(item[1], error))
            progress.advance(error is None)
            new = len(done) - last_checkpoint[1]
            if new >= args.checkpoint_every or (new and time.monotonic() - last_checkpoint[0] > CHECKPOINT_EVERY_S):
                write_shard(part, inputs, done)
                last_checkpoint[:] = [time.monotonic(), len(done)]

        batch_job.run_pool(todo, embed_one, workers, finished)
    write_shard(part, inputs, done)
    batch_job.write_failures(args.output, shard, failures)
    progress.close()
    return 1 if failures else 0


def write_shard(location: str, inputs: list[tuple[str, str]], done: dict[str, str]) -> None:
    """The shard in listing order, written at once (a reader or a retry never sees half of it)."""
    body = "".join(done[name] + "\n" for _, name in inputs if name in done)
    storage.write_bytes(location, body.encode(), content_type="application/x-ndjson")


if __name__ == "__main__":
    batch_job.exit_with(main)
