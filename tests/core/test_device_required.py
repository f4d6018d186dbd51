"""An explicit CUDA device that is missing stops the start with one clear line (issue 23, item 4).

Runs where there is no CUDA (this machine): that absence is the broken GPU under test. Where CUDA
is there, the tests skip: the device is not missing. A GPU deploy sets CLIP_DEVICE=cuda /
WHISPER_DEVICE=cuda, so without this a failed CUDA start would serve from the CPU (auto).
"""

import json
import os
import subprocess
import sys
import time

import pytest

from core.settings import SettingsError
from tests.conftest import ROOT, free_port

MESSAGES = {"server": "CLIP_DEVICE=cuda but CUDA is not available in this container",
            "worker": "WHISPER_DEVICE=cuda but CTranslate2 sees no CUDA device in this container"}
ENV = {"server": {"CLIP_DEVICE": "cuda", "CLIP_MODEL": "demo"}, "worker": {"WHISPER_DEVICE": "cuda"}}


def _cuda_visible() -> bool:
    import ctranslate2
    import torch

    return torch.cuda.is_available() or ctranslate2.get_cuda_device_count() > 0


pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(_cuda_visible(), reason="CUDA is available: nothing is missing")]


def _start(argv: list[str], package: str, **extra) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, **ENV[package], "PORT": str(free_port()), "WEB_WORKERS": "1", **extra}
    started = time.monotonic()
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    return out, time.monotonic() - started


def test_check_weights_refuses_an_explicit_cuda_before_the_weights(tmp_path):
    from server.backends import make_backend as clip_backend
    from server.settings import ServerSettings
    from worker.backends import make_backend as whisper_backend
    from worker.settings import WorkerSettings

    for model in ("demo", "ViT-B-32"):  # ViT-B-32 is not baked in tmp_path: the device is the first cause
        settings = ServerSettings.from_env({}, clip_model=model, clip_device="cuda", models_dir=str(tmp_path))
        with pytest.raises(SettingsError, match=MESSAGES["server"]):
            clip_backend(settings).check_weights()
    with pytest.raises(SettingsError, match=MESSAGES["worker"]):
        whisper_backend(WorkerSettings.from_env({}, whisper_device="cuda")).check_weights()
    from textembed.backend import SentenceBackend
    from textembed.settings import TextEmbedSettings

    text_settings = TextEmbedSettings.from_env({}, textembed_device="cuda", models_dir=str(tmp_path))
    with pytest.raises(SettingsError, match="TEXTEMBED_DEVICE=cuda but CUDA is not available"):
        SentenceBackend(text_settings).check_weights()
    # auto still falls back to the CPU
    clip_backend(ServerSettings.from_env({}, clip_model="demo", clip_device="auto")).check_weights()
    whisper_backend(WorkerSettings.from_env({}, whisper_device="auto")).check_weights()


@pytest.mark.parametrize("package", ["server", "worker"])
def test_the_launcher_exits_at_once_with_one_line(package):
    out, seconds = _start([sys.executable, "-m", package], package)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {MESSAGES[package]}"), out.stderr
    assert seconds < 60  # not a startup probe's budget of retries


def test_under_gunicorn_the_worker_does_not_boot_and_the_master_exits():
    # Past the launcher (gunicorn started on its own): the app's check_weights fails the boot,
    # gunicorn's master stops with its boot-error code, and the cause is in the log.
    argv = [sys.executable, "-m", "gunicorn", "--config", "python:core.gunicorn_conf"]
    out, seconds = _start(argv, "worker", APP_PACKAGE="worker")
    assert out.returncode == 3  # gunicorn's "Worker failed to boot"
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    causes = [r for r in records if MESSAGES["worker"] in r.get("message", "") + r.get("stack_trace", "")]
    assert len(causes) == 1, out.stdout
    assert seconds < 60
