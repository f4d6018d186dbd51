"""WHISPER_DEVICE=cuda without a CUDA device: the worker does not boot and gunicorn stops (issue 23).

Runs where CTranslate2 sees no CUDA device (this machine); skipped where it sees one.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from core.settings import SettingsError
from tests.conftest import ROOT, free_port
from worker.backends import make_backend
from worker.settings import WorkerSettings

pytestmark = pytest.mark.integration


def _cuda_devices() -> int:
    import ctranslate2

    return ctranslate2.get_cuda_device_count()


needs_no_cuda = pytest.mark.skipif(_cuda_devices() > 0, reason="a CUDA device is visible: nothing is missing")


@needs_no_cuda
def test_check_weights_refuses_an_explicit_cuda():
    settings = WorkerSettings.from_env({}, whisper_device="cuda")
    with pytest.raises(SettingsError, match="WHISPER_DEVICE=cuda but CTranslate2 sees no CUDA device"):
        make_backend(settings).check_weights()


@needs_no_cuda
def test_the_worker_exits_non_zero_at_boot_with_the_cause_in_its_log():
    started = time.monotonic()
    env = {**os.environ, "WHISPER_DEVICE": "cuda", "PORT": str(free_port()), "WEB_WORKERS": "1"}
    out = subprocess.run([sys.executable, "-m", "worker"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 3  # gunicorn's "Worker failed to boot": the master stops too
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    causes = [r for r in records if "WHISPER_DEVICE=cuda" in r.get("message", "") + r.get("stack_trace", "")]
    assert len(causes) == 1, out.stdout
    assert time.monotonic() - started < 60
