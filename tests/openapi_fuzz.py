"""Schemathesis against every app of the template: the apps it covers and how it runs them.

One entry per app in ``APPS`` (tests/test_openapi_fuzz.py runs each): the package ``python -m``
starts, the environment it starts with, the session fixture of a real model's MODELS_DIR, and
whether events are configured (the event routes are offered only then). Fake backends
where the app has one: the fuzz tests the contract (what the documents promise about inputs,
statuses and bodies), not the model; real images and audio still reach the services' decoders
(tests/openapi_media.py). The text embedder has no fake and runs on its small real model. The
command is the one `docs/development.md` gives for a running service, so `make test` runs what a
person runs by hand: every check, phases examples, coverage and fuzzing, deterministic generation
(the same cases on every run, so a failure reproduces), exclusions only in schemathesis.toml.

Every check without ``--checks all``: schemathesis 4 runs them all by default, and a check named
on its command line overrides the file's per-operation exclusions (4.32.5 merges the command
line over schemathesis.toml), so ``--checks all`` would also report the excluded failures.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = "examples,coverage,fuzzing"
# Generated cases per operation in the fuzzing phase (coverage adds its own boundary cases): 10-20 s
# per app on two shared cores, about 500 requests each.
MAX_EXAMPLES = 40


@dataclass(frozen=True)
class FuzzedApp:
    """An app as the fuzz starts it."""

    name: str
    package: str  # python -m <package>
    env: dict[str, str] = field(default_factory=dict)
    models_fixture: str | None = None  # a session fixture giving the MODELS_DIR of its real model
    events: bool = False  # EVENTS_OUTPUT set (a folder of the test's): the event routes offered, and fuzzed


APPS = [
    FuzzedApp("clip-server", "server", {"CLIP_MODEL": "fake"}),
    FuzzedApp("clip-server-with-events", "server", {"CLIP_MODEL": "fake"}, events=True),  # core's event routes
    FuzzedApp("whisper-worker", "worker", {"WHISPER_MODEL": "fake"}),
    # No fake backend: all-MiniLM-L6-v2 is small enough to fuzz for real.
    FuzzedApp("textembed", "textembed", models_fixture="textembed_models_dir"),
]


def st_command(url: str, *extra: str) -> list[str]:
    """The schemathesis run against ``url`` (a service's base URL), as docs/development.md gives it."""
    return [str(Path(sys.executable).with_name("st")), "run", f"{url}/openapi.json", "--phases", PHASES,
            "--generation-deterministic", "--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--no-color", *extra]


def fuzz(url: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run schemathesis from the repository root (where schemathesis.toml is) against ``url``."""
    return subprocess.run(st_command(url), cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
