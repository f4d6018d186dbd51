"""The images' run time without Docker: bake into a fresh MODELS_DIR offline, then serve from it.

This is what the Dockerfiles do (bake stage -> /models, runtime with HF_HUB_OFFLINE=1 and
MODELS_DIR=/models), run on this machine with the offline models: the demo CLIP checkpoint and
the embedded tiny.en. A missing model must stop the service at once with a message naming the
path and the bake command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import requests

from server.demo.shapes import draw_shape
from tests.conftest import ROOT, free_port, run_service
from tests.media import encode, speak

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
KEY = {"X-API-Key": "k"}  # /health shows weight paths only to a caller with the key


def run_module(module: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module], cwd=ROOT, env={**os.environ, **OFFLINE, **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A MODELS_DIR filled by both bake commands, as the image build does."""
    directory = tmp_path_factory.mktemp("models")
    for module, env in (("server.bake", {"CLIP_MODEL": "demo"}), ("worker.bake", {"WHISPER_MODEL": "tiny.en"})):
        baked = run_module(module, {**env, "MODELS_DIR": str(directory)})
        assert baked.returncode == 0, baked.stderr
        assert "baked into" in baked.stdout
    again = run_module("worker.bake", {"WHISPER_MODEL": "tiny.en", "MODELS_DIR": str(directory)})
    assert "already baked" in again.stdout  # idempotent: a rebuilt layer does no work
    return directory


def test_clip_server_serves_from_the_baked_directory(models_dir, tmp_path):
    env = {**OFFLINE, "CLIP_MODEL": "demo", "MODELS_DIR": str(models_dir), "API_KEY": "k"}
    with run_service("server", env, tmp_path) as service:
        health = requests.get(service.url + "/health", headers=KEY, timeout=5).json()  # paths need the key
        assert health["weights"].startswith(str(models_dir / "clip")), health
        image = encode(draw_shape("red", "circle", np.random.default_rng(0), size=(128, 128)))
        response = requests.post(service.url + "/embed", files={"image": ("x.jpg", image)}, headers=KEY, timeout=30)
        assert response.status_code == 200 and len(response.json()["embedding"]) == health["dim"]


def test_whisper_worker_serves_from_the_baked_directory(models_dir, tmp_path):
    env = {**OFFLINE, "WHISPER_MODEL": "tiny.en", "MODELS_DIR": str(models_dir), "API_KEY": "k"}
    with run_service("worker", env, tmp_path, ready_timeout_s=180) as service:
        health = requests.get(service.url + "/health", headers=KEY, timeout=5).json()
        assert health["model_dir"] == str(models_dir / "whisper" / "tiny.en"), health
        with open(speak("Please send the quarterly report to Maria.", tmp_path / "report.wav"), "rb") as audio:
            response = requests.post(service.url + "/transcribe", files={"audio": ("a.wav", audio)}, headers=KEY,
                                     timeout=120)
        assert response.status_code == 200 and "report" in response.json()["text"].lower()


@pytest.mark.parametrize("module, env, missing", [
    ("server", {"CLIP_MODEL": "ViT-B-32", "CLIP_PRETRAINED": "openai"}, "clip/open_clip__ViT-B-32__openai"),
    ("worker", {"WHISPER_MODEL": "large-v3"}, "whisper/large-v3"),
])
def test_a_missing_model_stops_the_service_at_once_naming_the_path_and_the_bake_command(
        module, env, missing, tmp_path):
    started = time.monotonic()
    result = run_module(module, {**env, "MODELS_DIR": str(tmp_path), "PORT": str(free_port())}, timeout=60)
    assert result.returncode != 0
    assert str(tmp_path / missing) in result.stderr and f"python -m {module}.bake" in result.stderr
    assert time.monotonic() - started < 30
