"""Progress for the CLI: a tqdm bar on a terminal, plain lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import sys


class Progress:
    """Counts finished files; ``note`` prints a line without breaking the bar."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self._bar = None
        if enabled and total and self.stream.isatty():
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is optional: pip install 'gpu-inference-client[progress]'
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, unit="file", file=self.stream, dynamic_ncols=True)

    def advance(self, name: str, outcome: str) -> None:
        """One file finished (``outcome``: 'done' or an error)."""
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
            if outcome != "done":
                self._bar.write(f"failed: {name}: {outcome}", file=self.stream)
        else:
            print(f"[{self.done}/{self.total}] {name}: {outcome}", file=self.stream, flush=True)

    def note(self, message: str) -> None:
        """A line about the run (a retry, a worker out or back)."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
