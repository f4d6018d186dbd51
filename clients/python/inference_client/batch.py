"""Transcribe a directory over a worker pool: resumable, atomic outputs, every failure listed."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from inference_client.errors import InferenceClientError
from inference_client.fanout import WorkerPool
from inference_client.progress import Progress
from inference_client.whisper import FILE_EXTENSIONS

AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".webm", ".mp4",
                              ".m4v", ".mov", ".mkv", ".avi", ".wma", ".amr", ".3gp"})
FAILURES_FILE = "failures.tsv"


@dataclass
class Job:
    """One input and where its transcript goes."""

    source: Path
    name: str  # relative to the input directory, for messages and the failures file
    output: Path


@dataclass
class Summary:
    """How a folder run (``transcribe`` or ``embed``) ended."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name -> "code: message"
    failures_file: Path | None = None

    @property
    def transcribed(self) -> list[str]:
        return self.done

    @property
    def embedded(self) -> list[str]:
        return self.done


def find_jobs(source_dir: Path, out_dir: Path, response_format: str) -> list[Job]:
    """Audio/video files under ``source_dir`` (recursive, sorted) and their output paths under ``out_dir``."""
    extension = FILE_EXTENSIONS[response_format]
    out_resolved = out_dir.resolve()
    sources = []
    for path in sorted(source_dir.rglob("*")):
        relative = path.relative_to(source_dir)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in AUDIO_EXTENSIONS or out_resolved in path.resolve().parents:
            continue
        sources.append(relative)
    # meeting.m4a -> meeting.srt, unless meeting.mp3 sits beside it: then meeting.m4a.srt and meeting.mp3.srt.
    stems: dict[Path, int] = {}
    for relative in sources:
        stems[relative.with_suffix("")] = stems.get(relative.with_suffix(""), 0) + 1
    jobs = []
    for relative in sources:
        target = relative.with_suffix("") if stems[relative.with_suffix("")] == 1 else relative
        jobs.append(Job(source_dir / relative, relative.as_posix(), out_dir / (target.as_posix() + extension)))
    return jobs


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename: a crash never leaves a partial output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def transcribe_directory(pool: WorkerPool, source_dir: Path, out_dir: Path, *, response_format: str = "json",
                         concurrency: int | None = None, overwrite: bool = False, progress: bool = True,
                         options: dict | None = None) -> Summary:
    """Transcribe every audio file under ``source_dir`` whose output is missing; list the failures."""
    jobs = find_jobs(source_dir, out_dir, response_format)
    summary = Summary()
    todo = []
    for job in jobs:
        if job.output.exists() and not overwrite:
            summary.skipped.append(job.name)
        else:
            todo.append(job)
    jobs_by_name = {job.name: job for job in todo}

    def run(name: str) -> None:
        job = jobs_by_name[name]
        result = pool.transcribe(job.source, response_format, **(options or {}))
        text = json.dumps(result, ensure_ascii=False, indent=2) + "\n" if isinstance(result, dict) else result
        write_atomically(job.output, text)

    summary.done, summary.failed = run_folder(pool, list(jobs_by_name), run, concurrency or 4 * len(pool.workers),
                                              progress)
    summary.failures_file = write_failures(out_dir / FAILURES_FILE, summary.failed)
    return summary


def run_folder(pool: WorkerPool, names: list[str], work: Callable[[str], None], concurrency: int,
               progress: bool) -> tuple[list[str], dict[str, str]]:
    """``work(name)`` for every name on ``concurrency`` threads, with progress; (done, failed name -> reason)."""
    done: list[str] = []
    failed: dict[str, str] = {}
    bar = Progress(len(names), enabled=progress)
    previous_hook = pool.on_event
    pool.on_event = lambda kind, url, detail: bar.note(f"{kind}: {url}: {detail}")
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as executor:
            futures = {executor.submit(work, name): name for name in names}
            try:
                for future in as_completed(futures):
                    name, error = futures[future], future.exception()
                    if error is None:
                        done.append(name)
                        bar.advance(name, "done")
                    else:
                        failed[name] = reason(error)
                        bar.advance(name, failed[name])
            except KeyboardInterrupt:
                executor.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        bar.close()
        pool.on_event = previous_hook
    return done, failed


def write_failures(path: Path, failed: dict[str, str]) -> Path | None:
    """The failures list (file, then 'code: message'), or none: a rerun that fixed everything leaves no stale list."""
    if not failed:
        path.unlink(missing_ok=True)
        return None
    lines = [f"{name}\t{why}" for name, why in sorted(failed.items())]
    write_atomically(path, "file\terror\n" + "\n".join(lines) + "\n")
    return path


def reason(error: BaseException) -> str:
    """'code: message' on one line (the failures file is tab-separated)."""
    if isinstance(error, InferenceClientError):
        code = getattr(error, "code", type(error).__name__)
        message = getattr(error, "message", str(error))
    elif isinstance(error, OSError):
        code, message = "read_error", str(error)
    else:
        code, message = type(error).__name__, str(error)
    return " ".join(f"{code}: {message}".split())
