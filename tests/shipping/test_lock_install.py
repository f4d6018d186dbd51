"""Each lock installs with ``--require-hashes`` on a Python 3.11 patch other than the one it was
resolved on (Debian bookworm's /usr/bin/python3.11, 3.11.2, the stand-in base's Python).

Marked ``images`` (runs with `make test-images`): it downloads a few hundred MB from PyPI. The
worker lock installs with its dependencies checked by pip, which is where a missing marker-
conditional dependency failed; the server lock needs the base image's torch, so it installs
without dependency resolution here (tests/shipping/test_lock_markers.py checks its closure).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shipping.test_supply_chain import LOCKS

pytestmark = [pytest.mark.images, pytest.mark.timeout(900)]
OTHER_PYTHON = Path(os.environ.get("OTHER_PYTHON_311", "/usr/bin/python3.11"))


@pytest.fixture(scope="module")
def other_venv(tmp_path_factory) -> Path:
    if not OTHER_PYTHON.is_file():
        pytest.fail(f"{OTHER_PYTHON} missing: apt-get install python3.11-venv (or set OTHER_PYTHON_311)")
    mine = sys.version_info[:3]
    theirs = subprocess.run([OTHER_PYTHON, "-c", "import sys; print(*sys.version_info[:3])"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert tuple(map(int, theirs))[:2] == (3, 11) and tuple(map(int, theirs)) != mine, theirs
    venv = tmp_path_factory.mktemp("py311-other") / "venv"
    subprocess.run([OTHER_PYTHON, "-m", "venv", venv], check=True)
    return venv


@pytest.mark.parametrize("app, flags", [("worker", []), ("server", ["--no-deps"])])
def test_lock_installs_with_hashes_on_another_311_patch(other_venv, app, flags):
    # PyPI only, as in the image build: no local wheel mirrors or constraints of this machine.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE="/dev/null", PIP_CERT=os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))
    result = subprocess.run([other_venv / "bin/pip", "install", "--quiet", "--no-cache-dir", "--require-hashes",
                             "--index-url", "https://pypi.org/simple", *flags, "-r", LOCKS[app]],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
