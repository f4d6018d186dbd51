"""Batch mode for Cloud Run Jobs, shared by both apps: what to do, which part is this task's, progress.

A job task (``run_job``) lists its inputs (a local directory, a ``gs://`` prefix or a manifest),
refuses inputs whose outputs would collide, takes its deterministic shard by
``CLOUD_RUN_TASK_INDEX`` / ``CLOUD_RUN_TASK_COUNT``, skips what an earlier attempt finished, and
runs the app's job function on a thread pool. Each thread calls the app's service (``ClipService``
/ ``WhisperService``), so decoding runs in parallel while the one batcher keeps full batches in
front of the model: the same path as the HTTP routes, without HTTP. Where results go is
``core.from_storage.batch_results``. An app's ``job.py`` adds only its entry point and the shape of its results.

Each input is one request through the ``job`` door (core/request_context.py): its own deadline,
and the inputs its service counted go to this process's metrics (``door="job"``; a job has no
/metrics to scrape, so they are also added up in the task's summary line, ``inputs``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from core import request_context
from core.errors import ServiceError
from core.from_storage import storage
from core.from_storage.batch_results import BatchResults, check_distinct
from core.model.admission import MemoryBudget, budget_from_settings
from core.settings import SettingsError
from core.web import metrics  # noqa: F401 - importing it registers the input counters (door="job")

log = logging.getLogger("core.from_storage.batch_job")
T = TypeVar("T")

MANIFEST_SUFFIXES = (".txt", ".lst", ".manifest")
# A job has no client to answer 429: an input waits this long for decode memory to free up.
MEMORY_WAIT_S = 3600.0
PROGRESS_EVERY_S = 10.0  # JSON progress lines when not on a terminal: often enough to see it move


@dataclass(frozen=True)
class Shard:
    """This task's place in the job: task ``index`` of ``count``."""

    index: int
    count: int

    @classmethod
    def from_env(cls, environ=os.environ) -> Shard:
        """Cloud Run's ``CLOUD_RUN_TASK_INDEX`` / ``CLOUD_RUN_TASK_COUNT`` (0 of 1 when run by hand)."""
        index = int(environ.get("CLOUD_RUN_TASK_INDEX", "0"))
        count = int(environ.get("CLOUD_RUN_TASK_COUNT", "1"))
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"CLOUD_RUN_TASK_INDEX={index} is not within CLOUD_RUN_TASK_COUNT={count}")
        return cls(index, count)

    def take(self, items: Sequence[str]) -> list[str]:
        """A contiguous, deterministic slice of the sorted inputs; all tasks together cover each once."""
        start = len(items) * self.index // self.count
        stop = len(items) * (self.index + 1) // self.count
        return list(items[start:stop])

    @property
    def name(self) -> str:
        """``part-00003-of-00010``: names this task's output and failures files."""
        return f"part-{self.index:05d}-of-{self.count:05d}"


def common_arguments(prog: str, description: str) -> argparse.ArgumentParser:
    """--input/--output (or JOB_INPUT/JOB_OUTPUT) and --workers, shared by both apps' jobs."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--input", default=os.environ.get("JOB_INPUT"),
                        help="JOB_INPUT: a local directory, a gs:// prefix, or a manifest file (.txt, one "
                             "path or URI per line)")
    parser.add_argument("--output", default=os.environ.get("JOB_OUTPUT"),
                        help="JOB_OUTPUT: a local directory or gs:// prefix")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("JOB_WORKERS", "0")),
                        help="JOB_WORKERS: decoding threads; 0 = 2 x the model's batch size")
    return parser


def require_locations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Both --input and --output are needed, and the output must not lie inside the input."""
    if not args.input or not args.output:
        parser.error("--input and --output (or JOB_INPUT and JOB_OUTPUT) are required")
    if storage.is_below(args.output, args.input):
        parser.error("--output must not lie inside --input (the results would be read as inputs)")


def is_manifest(source: str) -> bool:
    """A manifest is a file listing inputs, one per line (told apart from a folder by its suffix)."""
    if not source.lower().endswith(MANIFEST_SUFFIXES):
        return False
    return storage.is_gcs(source) or not os.path.isdir(storage.local_path(source))


def list_inputs(source: str, suffixes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(location, name) of every input, sorted: ``name`` is the path relative to the folder or, for
    manifest entries, as listed (the ``path`` field of the outputs)."""
    if is_manifest(source):
        text = storage.read_bytes(source).decode("utf-8")
        entries = {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
        return sorted((entry, entry) for entry in entries)  # a line listed twice is one input
    found = []
    for location in storage.list_prefix(source):
        if location.lower().endswith(suffixes):
            found.append((location, location[len(source.rstrip("/")) + 1:]))
    return found


class Progress:
    """A tqdm bar on a terminal, JSON lines (for Cloud Logging) every few seconds otherwise."""

    def __init__(self, total: int, shard: Shard, unit: str, already_done: int = 0, stream=None):
        self.total, self.shard, self.unit = total, shard, unit
        self.skipped = already_done  # finished by an earlier attempt of this task
        self.done = self.failed = 0
        self.inputs: dict[str, float] = {}  # what the service counted, summed over the inputs done
        self.started = time.monotonic()
        self._last_line = self.started
        self._stream = stream or sys.stderr
        self._bar = None
        if self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=already_done, unit=unit, desc=shard.name, file=self._stream)

    def advance(self, ok: bool, inputs: dict | None = None) -> None:
        """One more input finished (or failed), with what its request context counted."""
        for name, amount in (inputs or {}).items():
            self.inputs[name] = self.inputs.get(name, 0) + amount
        self.done += 1
        self.failed += not ok
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(failed=self.failed)
        elif time.monotonic() - self._last_line >= PROGRESS_EVERY_S:
            self._line("progress")

    def close(self) -> None:
        """The final line (always printed: it is the task's summary in the logs)."""
        if self._bar is not None:
            self._bar.close()
        self._line("finished")

    def _line(self, event: str) -> None:
        self._last_line = time.monotonic()
        elapsed = self._last_line - self.started
        print(json.dumps({"severity": "INFO", "message": f"job {event}", "task": self.shard.name,
                          "done": self.skipped + self.done, "failed": self.failed, "total": self.total,
                          "skipped": self.skipped,
                          "inputs": {name: round(amount, 2) for name, amount in self.inputs.items()},
                          f"{self.unit}_per_s": round(self.done / elapsed, 2) if elapsed else 0.0}),
              file=self._stream, flush=True)


def run_pool(items: Iterable[T], job: Callable[[T], object], workers: int,
             on_done: Callable[[T, object, BaseException | None], None]) -> None:
    """Run ``job`` on every item with ``workers`` threads, at most 2 x workers in flight (bounded
    memory however long the listing), calling ``on_done(item, result, error)`` on this thread."""
    pending: dict[Future, T] = {}
    iterator: Iterator[T] = iter(items)
    end = object()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job") as pool:
        while True:
            while len(pending) < 2 * workers:
                item = next(iterator, end)
                if item is end:
                    break
                pending[pool.submit(job, item)] = item
            if not pending:
                return
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                item = pending.pop(future)
                error = future.exception()
                on_done(item, None if error else future.result(), error)


def error_record(path: str, error: BaseException) -> dict:
    """One line of the failures file: what failed and why (the service's code when it has one)."""
    if isinstance(error, ServiceError):
        return {"path": path, "error": {"code": error.code, "message": error.message}}
    return {"path": path, "error": {"code": "internal_error", "message": f"{type(error).__name__}: {error}"}}


def write_failures(output: str, shard: Shard, failures: list[dict]) -> None:
    """``failures/<part>.jsonl`` lists what failed and why; removed again once nothing fails."""
    location = storage.join(output, "failures", f"{shard.name}.jsonl")
    if failures:
        body = "".join(json.dumps(record) + "\n" for record in failures)
        storage.write_bytes(location, body.encode(), content_type="application/x-ndjson")
    elif storage.exists(location):
        storage.write_bytes(location, b"", content_type="application/x-ndjson")


def memory_budget(settings) -> MemoryBudget:
    """The job's decode-memory budget: the service's (DECODE_MEMORY_BUDGET_MB, auto from the
    container's limit), but an input waits for room instead of failing with 429.

    A job decodes many inputs at once (``--workers`` threads), so without it a folder of large
    PNGs or long recordings would run the task out of memory. An input larger than the whole
    budget still fails at once (413 ``input_too_large_to_decode``) and is listed with the failures.
    """
    return budget_from_settings(settings, wait_s=MEMORY_WAIT_S)


def exit_with(main: Callable[[], int]) -> None:
    """Run a job's main and exit with its status; a configuration or input error is one clear line."""
    try:
        status = main()
    except ServiceError as err:  # bad --option, unreadable listing, storage unavailable
        sys.exit(f"error: {err.message}")
    except SettingsError as err:
        sys.exit(f"error: {err}")
    sys.exit(status)


# Called once there is work: (job function (location, name) -> result, the model's batch size).
Start = Callable[[], "tuple[Callable[[str, str], object], int]"]


def run_job(source: str, output: str, *, suffixes: tuple[str, ...], unit: str, workers: int,
            make_results: Callable[[Shard, list[str]], BatchResults], start: Start) -> int:
    """One task: list, refuse colliding outputs, shard, skip what is finished, run the rest; exit status."""
    shard = Shard.from_env()
    listing = list_inputs(source, suffixes)
    inputs = shard.take(listing)
    results = make_results(shard, [name for _, name in inputs])
    # On the whole listing, so every task refuses the same job, before any model loads.
    check_distinct([name for _, name in listing], results)
    done = results.finished([name for _, name in inputs])
    todo = [item for item in inputs if item[1] not in done]
    failures: list[dict] = []
    work, batch_size = start() if todo else (None, 0)
    # Started after the model is ready: the rate it reports is the task's steady throughput.
    progress = Progress(len(inputs), shard, unit=unit, already_done=len(inputs) - len(todo))
    if work is not None:

        def one(item: tuple[str, str]) -> dict:
            with request_context.opened("job") as context:
                results.add(item[1], work(*item))
                return context.inputs

        def finished(item: tuple[str, str], inputs: dict | None, error: BaseException | None) -> None:
            if error is not None:
                failures.append(error_record(item[1], error))
            progress.advance(error is None, inputs)

        run_pool(todo, one, workers or 2 * batch_size, finished)
    results.close()
    write_failures(output, shard, failures)
    progress.close()
    return 1 if failures else 0


def wait_until_ready(runner, timeout_s: float = 600.0) -> None:
    """Block until the runner's model is loaded and warm; raise if loading failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        ok, reason, _ = runner.health()
        if ok:
            return
        if runner.batcher.state in ("failed", "dead", "stopped") or time.monotonic() > deadline:
            raise RuntimeError(f"the model did not become ready: {reason}")
        time.sleep(0.05)
