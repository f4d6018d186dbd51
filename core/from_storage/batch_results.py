"""Where a batch job's results go, and which inputs an earlier attempt already finished.

Two shapes, one interface (``BatchResults``), used by ``core.from_storage.batch_job.run_job``:

- ``JsonlShard``: one JSONL file per task, one ``{"path", ...result}`` line per input in listing
  order (the CLIP job). Rewritten atomically every ``checkpoint_every`` results or minute, so a
  killed task resumes after its last checkpoint.
- ``FilesPerInput``: files per input, named after the input's *full* name (``talks/a.wav`` ->
  ``talks/a.wav.json``, ``.srt``, ...) so ``a.wav`` and ``a.mp3`` never share a result (the Whisper
  job). The ``.json`` is written last: its presence marks the input finished.

Output names are derived from input names; two inputs that would write the same output are
refused before any work (``check_distinct``): a silently lost result is worse than a stopped job.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from core.errors import InvalidInput
from core.from_storage import storage

CHECKPOINT_EVERY_S = 60.0  # also checkpoint at least this often, however slow the inputs
RESULT = "json"  # the file written last, whose presence means an input is done


def write_result_files(base: str, files: dict[str, tuple[bytes, str]], *, if_absent: bool = False) -> list[str]:
    """Write ``{extension: (bytes, content type)}`` as ``<base>.<extension>`` -> their URIs.

    Everything else first, the .json last: its presence means the whole result is there (batch
    jobs and events both read it so). ``if_absent``: create-only writes (events).
    """
    written = []
    for extension in sorted(files, key=lambda ext: ext == RESULT):
        body, content_type = files[extension]
        uri = f"{base}.{extension}"
        storage.write_bytes(uri, body, content_type=content_type, if_absent=if_absent)
        written.append(uri)
    return written


class BatchResults(Protocol):
    """A job's result sink: what is done already, one result per input, and a final flush."""

    def output_of(self, name: str) -> str:
        """Where the result of input ``name`` goes (two inputs may never share one)."""

    def finished(self, names: Sequence[str]) -> set[str]:
        """The names among ``names`` that an earlier attempt finished."""

    def add(self, name: str, result) -> None:
        """Record one input's result (called from the pool's threads)."""

    def close(self) -> None:
        """Write whatever is still pending."""


def output_name(name: str) -> str:
    """An input's name as an output path: the full name, extension kept, scheme and leading '/' dropped.

    ``talks/a.m4a`` -> ``talks/a.m4a``; a manifest's ``gs://b/x/y.wav`` -> ``b/x/y.wav``.
    """
    for scheme in (storage.GCS_SCHEME, storage.FILE_SCHEME):
        if name.startswith(scheme):
            name = name[len(scheme):]
    return name.lstrip("/")


def check_distinct(names: Sequence[str], results: BatchResults) -> None:
    """Refuse the job before any work when two inputs would write the same output."""
    seen: dict[str, str] = {}
    for name in names:
        output = results.output_of(name)
        if output in seen:
            raise InvalidInput(f"inputs {seen[output]!r} and {name!r} would both write {output}; rename one or "
                               "run them as separate jobs", code="output_collision")
        seen[output] = name


class JsonlShard:
    """One JSONL file per task, in listing order, checkpointed as it grows."""

    def __init__(self, location: str, names: Sequence[str], checkpoint_every: int):
        self.location = location
        self.names = list(names)
        self.checkpoint_every = checkpoint_every
        self._lines = self._read()
        self._lock = threading.Lock()
        self._last = (time.monotonic(), len(self._lines))

    def _read(self) -> dict[str, str]:
        if not storage.exists(self.location):
            return {}
        lines = storage.read_bytes(self.location).decode("utf-8").splitlines()
        return {json.loads(line)["path"]: line for line in lines if line.strip()}

    def output_of(self, name: str) -> str:
        """Every input is its own line, named by its path as listed."""
        return f"{self.location}#{name}"

    def finished(self, names: Sequence[str]) -> set[str]:
        """The inputs with a line in the last checkpoint."""
        return {name for name in names if name in self._lines}

    def add(self, name: str, result: dict) -> None:
        """Keep the line; rewrite the shard after ``checkpoint_every`` new lines or a minute."""
        with self._lock:
            self._lines[name] = json.dumps({"path": name, **result})
            new = len(self._lines) - self._last[1]
            if new >= self.checkpoint_every or (new and time.monotonic() - self._last[0] > CHECKPOINT_EVERY_S):
                self._write()

    def close(self) -> None:
        """The final shard."""
        with self._lock:
            self._write()

    def _write(self) -> None:
        # Written at once (storage writes are atomic): a reader or a retry never sees half of it.
        body = "".join(self._lines[name] + "\n" for name in self.names if name in self._lines)
        storage.write_bytes(self.location, body.encode(), content_type="application/x-ndjson")
        self._last = (time.monotonic(), len(self._lines))


class FilesPerInput:
    """Result files per input under ``output``, named after the input's full name, the .json last."""

    def __init__(self, output: str):
        self.output = output

    def output_of(self, name: str) -> str:
        """``<output>/<full input name>`` (each result file adds its own extension)."""
        return storage.join(self.output, output_name(name))

    def finished(self, names: Sequence[str]) -> set[str]:
        """The inputs whose .json exists."""
        return {name for name in names if storage.exists(f"{self.output_of(name)}.{RESULT}")}

    def add(self, name: str, result: dict[str, tuple[bytes, str]]) -> None:
        """Write ``{extension: (bytes, content type)}``; the .json last, so it marks a finished input."""
        write_result_files(self.output_of(name), result)

    def close(self) -> None:
        """Nothing pending: every result was written as it came."""
