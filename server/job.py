"""``python -m server.job --input SRC --output DST``: embed every image of SRC in a Cloud Run Jobs task.

Output: one JSONL shard per task, ``DST/part-00003-of-00010.jsonl``, one ``{"path", "embedding"}``
line per image in listing order (``path`` as listed), and ``DST/failures/part-....jsonl`` for what
failed. The shard is rewritten atomically every ``--checkpoint-every`` images, so a task that is
killed and retried starts after the last checkpoint; exit status 1 when anything failed, so
``--max-retries`` retries the task. The job itself is core/from_storage/job_entry.py and batch_job.py.
"""

from __future__ import annotations


def embed_image(service, data: bytes, _name: str, _options) -> dict:
    """One image's line of the shard."""
    return {"embedding": service.embed([data], [])["embedding"]}


if __name__ == "__main__":
    from core.from_storage import job_entry
    from server.app import CLIP

    job_entry.run(CLIP, __doc__.splitlines()[0])
