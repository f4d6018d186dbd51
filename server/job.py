"""``python -m server.job --input SRC --output DST``: embed every image of SRC in a Cloud Run Jobs task.

Output: one JSONL shard per task, ``DST/part-00003-of-00010.jsonl``, one ``{"path", "embedding"}``
line per image in listing order (``path`` as listed), and ``DST/failures/part-....jsonl`` for what
failed. The shard is rewritten atomically every ``--checkpoint-every`` images, so a task that is
killed and retried starts after the last checkpoint; exit status 1 when anything failed, so
``--max-retries`` retries the task. The job itself (listing, shards, resume, pool) is core/from_storage/batch_job.py.
"""

from __future__ import annotations

import dataclasses

from core.from_storage import batch_job, storage
from core.from_storage.batch_results import JsonlShard
from core.model.runner import ModelRunner
from core.web.logs import configure_logging
from server.backends import make_backend
from server.service import ClipService
from server.settings import ServerSettings

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
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

    def start():
        service = start_service(settings)

        def embed_one(location: str, _name: str) -> dict:
            image = storage.read_bytes(location, settings.max_request_bytes)
            return {"embedding": service.embed([image], [])["embedding"]}

        return embed_one, service.runner.batcher.max_batch_size

    return batch_job.run_job(
        args.input, args.output, suffixes=IMAGE_SUFFIXES, unit="images", workers=args.workers, start=start,
        make_results=lambda shard, names: JsonlShard(storage.join(args.output, f"{shard.name}.jsonl"), names,
                                                     args.checkpoint_every))


if __name__ == "__main__":
    batch_job.exit_with(main)
