"""Embed a folder of images over one or more CLIP servers into ``vectors.jsonl``: resumable, nothing lost.

Each finished image is one line, ``{"path": <relative to DIR>, "model": ..., "vector": [...]}``,
appended and flushed as soon as its answer arrives (one writer, under a lock), so a run killed at
any moment keeps every line it wrote; a line cut off by the kill is dropped on the next run, which
embeds exactly the images that have no line yet. Images are downscaled before upload as
``ClipClient`` does (the servers' published preprocessing), and spread over the servers with the
same pool as ``transcribe`` (least outstanding requests, retries, circuit breaker).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from inference_client import images as image_prep
from inference_client.batch import FAILURES_FILE, Summary, run_folder, write_failures
from inference_client.errors import ConnectionFailed, ServiceError
from inference_client.fanout import WorkerPool

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
VECTORS_FILE = "vectors.jsonl"
# Requests in flight per server when its /health does not say its batch size (the CPU default).
DEFAULT_BATCH_SIZE = 8
MAX_CONCURRENCY = 64  # each request thread holds one prepared image; more only queues at the servers


def find_images(source_dir: Path, out_file: Path) -> list[str]:
    """Image files under ``source_dir`` (recursive, sorted, hidden ones skipped) as relative POSIX paths."""
    found = []
    for path in sorted(source_dir.rglob("*")):
        relative = path.relative_to(source_dir)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.resolve() != out_file.resolve():
            found.append(relative.as_posix())
    return found


def read_done(out_file: Path) -> set[str]:
    """Paths already in ``out_file``; a last line cut off by a killed run is removed from the file."""
    if not out_file.exists():
        return set()
    done, good_bytes = set(), 0
    with open(out_file, "rb") as lines:
        for line in lines:
            if not line.endswith(b"\n"):
                break  # torn: the run was killed while writing it
            try:
                done.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                break  # garbage from here on: keep what came before
            good_bytes += len(line)
    if good_bytes != out_file.stat().st_size:
        with open(out_file, "r+b") as handle:
            handle.truncate(good_bytes)
    return done


def concurrency_for(pool: WorkerPool) -> int:
    """Requests in flight in all: each server's batch size (its /health), so every batch can fill."""
    total = 0
    for worker in pool.workers:
        try:
            batching = worker.http.health().get("batching") or {}
            size = batching.get("max_batch_size")
            total += size if isinstance(size, int) and size > 0 else DEFAULT_BATCH_SIZE
        except (ServiceError, ConnectionFailed, ValueError):
            total += DEFAULT_BATCH_SIZE  # down now; the pool will use it when it is back
    return max(1, min(MAX_CONCURRENCY, total))


def published_preprocessing(pool: WorkerPool) -> dict | None:
    """The servers' image preprocessing (GET /v1/models of the first that answers), or None."""
    try:
        models = pool.call(lambda http: http.send("GET", "/v1/models").json())
    except (ServiceError, ConnectionFailed, ValueError):
        return None
    return image_prep.preprocessing_of(models)


def embed_directory(pool: WorkerPool, source_dir: Path, out_file: Path | None = None, *,
                    concurrency: int | None = None, resize: bool = True, progress: bool = True) -> Summary:
    """Embed every image under ``source_dir`` that ``out_file`` has no line for; list the failures."""
    out_file = out_file or source_dir / VECTORS_FILE
    out_file.parent.mkdir(parents=True, exist_ok=True)
    done = read_done(out_file)
    summary = Summary()
    todo = []
    for name in find_images(source_dir, out_file):
        (summary.skipped if name in done else todo).append(name)
    preprocessing = published_preprocessing(pool) if resize and todo and image_prep.available() else None
    write_lock = threading.Lock()
    with open(out_file, "a", encoding="utf-8") as out:

        def run(name: str) -> None:
            files = [("image", image_prep.prepare(Path(name).name, (source_dir / name).read_bytes(), preprocessing))]
            body = pool.call(lambda http: http.send("POST", "/embed", files=files).json())
            line = json.dumps({"path": name, "model": body["model"], "vector": body["image_embeddings"][0]})
            with write_lock:
                out.write(line + "\n")
                out.flush()  # in the OS's hands: a killed client keeps it (a machine crash may not)

        summary.done, summary.failed = run_folder(pool, todo, run, concurrency or concurrency_for(pool), progress)
    summary.failures_file = write_failures(out_file.with_name(f"{out_file.stem}.{FAILURES_FILE}"), summary.failed)
    return summary


def default_servers() -> str:
    """$CLIP_SERVER_URLS, else $CLIP_SERVER_URL (one server)."""
    return os.environ.get("CLIP_SERVER_URLS") or os.environ.get("CLIP_SERVER_URL") or ""
