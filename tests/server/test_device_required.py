"""An explicit CUDA device that is missing stops the start with one clear line (issue 23, item 4).

Runs where there is no CUDA (this machine): that absence is the broken GPU under test. Where CUDA
is there, the tests skip: the device is not missing.
"""

import os
import subprocess
import sys
import time

import pytest

from core.settings import SettingsError
from server.backends import make_backend
from server.settings import ServerSettings
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.integration


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


needs_no_cuda = pytest.mark.skipif(_cuda_available(), reason="CUDA is available: nothing is missing")


@needs_no_cuda
@pytest.mark.parametrize("model", ["demo", "ViT-B-32"])
def test_check_weights_refuses_an_explicit_cuda_without_loading(model, tmp_path):
    settings = ServerSettings.from_env({}, clip_model=model, clip_device="cuda", models_dir=str(tmp_path))
    with pytest.raises(SettingsError, match="CLIP_DEVICE=cuda but CUDA is not available"):
        make_backend(settings).check_weights()  # before the weights: the device is the first cause


@needs_no_cuda
def test_auto_still_falls_back_to_the_cpu():
    make_backend(ServerSettings.from_env({}, clip_model="demo", clip_device="auto")).check_weights()


@needs_no_cuda
def test_the_server_exits_at_once_with_one_line():
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "server"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "CLIP_DEVICE": "cuda", "CLIP_MODEL": "demo", "PORT": str(free_port())})
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "error: CLIP_DEVICE=cuda but CUDA is not available in this container "
        "(no GPU attached, or its driver failed to initialise)"]
    assert time.monotonic() - started < 60  # not a startup probe's budget of retries
