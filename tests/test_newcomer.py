"""What a new user runs first: `make setup` says what it does, and the production-shaped one-liner works."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def make_dry_run(target: str) -> str:
    """The commands `make TARGET` would run (make -n), with the venv stamp forced stale."""
    result = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout


def test_setup_announces_itself_and_shows_pip_progress():
    commands = make_dry_run("setup")
    install = [line for line in commands.splitlines() if "pip install" in line and "requirements/dev.txt" in line]
    assert install and "--quiet" not in install[0]  # four silent minutes was the complaint
    assert "about 6 GB" in commands


def test_production_shaped_one_liner_serves_512_dimensions():
    commands = make_dry_run("run-server-vitb32")
    (line,) = [line for line in commands.splitlines() if "-m server" in line]
    env = dict(word.split("=", 1) for word in shlex.split(line) if "=" in word and not word.startswith("-"))
    from server.backends import make_backend
    from server.settings import ServerSettings

    backend = make_backend(ServerSettings.from_env(env))
    backend.load()
    assert backend.dim == 512  # what a ViT-B-32 deployment serves, unlike the demo model's 64
