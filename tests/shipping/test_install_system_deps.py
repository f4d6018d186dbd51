"""scripts/install-system-deps.sh: apt waits for the package lock, then says who holds it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def test_apt_waits_for_the_lock_then_names_the_process_holding_it(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH without espeak-ng, ffmpeg, ...: every package is "missing"
    bin_dir.mkdir()
    for tool in ("bash", "id", "readlink", "tr", "sort", "pgrep", "env", "sed", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    calls = tmp_path / "apt-calls"
    apt_get = bin_dir / "apt-get"
    apt_get.write_text(f'#!/bin/bash\necho "$@" >> {calls}\n'
                       "echo 'E: Could not get lock /var/lib/dpkg/lock-frontend' >&2\nexit 100\n")
    apt_get.chmod(0o755)
    (bin_dir / "dpkg").symlink_to(shutil.which("sleep"))  # a process named dpkg, as a running one is
    holder = subprocess.Popen([str(bin_dir / "dpkg"), "60"])
    try:
        result = subprocess.run(["bash", str(ROOT / "scripts" / "install-system-deps.sh")], capture_output=True,
                                text=True, timeout=60, env={"PATH": str(bin_dir), "APT_LOCK_TIMEOUT_S": "1"})
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1, result.stderr
    assert calls.read_text().splitlines()[0].startswith("-o DPkg::Lock::Timeout=1 update")
    assert "APT_LOCK_TIMEOUT_S=1" in result.stderr and "lock is held by" in result.stderr
    assert f"pid {holder.pid} " in result.stderr, result.stderr  # named, with its command line
