"""gunicorn config logic that needs no GPU: GPU discovery without CUDA, one GPU per worker."""

import os

import pytest

from core.gunicorn_conf import (
    apply,
    gpu_ids,
    pick_gpu,
    prepare_metrics_dir,
)
from server.settings import ServerSettings

pytestmark = pytest.mark.unit


def test_gpu_ids_come_from_cuda_visible_devices_without_touching_cuda():
    assert gpu_ids({"CUDA_VISIBLE_DEVICES": "0,2"}) == ["0", "2"]
    assert gpu_ids({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert gpu_ids({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_a_restarted_worker_takes_the_gpu_its_predecessor_freed():
    assert pick_gpu([], ["0", "1"]) == "0"
    assert pick_gpu(["0"], ["0", "1"]) == "1"
    assert pick_gpu(["1"], ["0", "1"]) == "0"  # worker on GPU 0 died and is replaced
    assert pick_gpu([], []) is None  # no GPU: nothing to pin


def test_several_processes_per_gpu_spread_evenly():
    taken: list[str | None] = []
    for _ in range(8):
        taken.append(pick_gpu(taken, ["0", "1"]))
    assert taken.count("0") == taken.count("1") == 4
    taken.remove("1")  # a worker on GPU 1 died: its replacement goes there
    assert pick_gpu(taken, ["0", "1"]) == "1"


def test_the_clip_server_config_sizes_workers_from_the_vcpus(monkeypatch):
    import core.gunicorn_conf as conf

    def workers(package: str) -> int:
        config: dict = {}
        conf.configure(config, package)  # what gunicorn gets with APP_PACKAGE=<package>
        assert config["wsgi_app"] == f"{package}.app:create_app()"
        return config["workers"]

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.delenv("WEB_WORKERS", raising=False)
    monkeypatch.setattr(conf, "available_cpus", lambda: 3)
    assert workers("server") == 3
    assert workers("worker") == 1
    monkeypatch.setenv("WEB_WORKERS", "2")
    assert workers("server") == 2


def test_the_baked_weights_cap_the_processes_a_gpu_holds(monkeypatch, tmp_path):
    # No GPU here: nvidia-smi's answer is replaced, the weights are a sparse file of the real size.
    import core.gunicorn_conf as conf

    baked = tmp_path / "clip" / "vit-h-14"
    baked.mkdir(parents=True)
    with open(baked / "open_clip_pytorch_model.bin", "wb") as weights:
        weights.truncate(3_944_000_000)  # ViT-H-14 laion2b in fp32
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("WEB_WORKERS", raising=False)
    monkeypatch.setattr(conf, "available_cpus", lambda: 8)
    monkeypatch.setattr(conf, "gpu_memory", lambda environ: 23034 * 1024 * 1024)  # an L4
    config: dict = {}
    conf.configure(config, "server")
    assert config["workers"] == 4  # not 8: 8 x 4.9 GB > 24 GB


def test_config_honours_port_threads_and_cloud_runs_shutdown_window(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    config = {}
    apply(config, ServerSettings.from_env({"PORT": "9123", "WEB_THREADS": "12"}))
    assert config["bind"] == "0.0.0.0:9123" and config["threads"] == 12 and config["workers"] == 1
    assert config["worker_class"] == "core.web.liveness.LivenessWorker" and not config["preload_app"]
    assert config["graceful_timeout"] < 10


def test_the_metrics_directory_starts_empty_and_is_created_when_unset(tmp_path):
    stale = tmp_path / "counter_123.db"
    stale.write_bytes(b"old samples")
    environ = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    assert prepare_metrics_dir(environ) == str(tmp_path) and not stale.exists()
    environ = {}
    created = prepare_metrics_dir(environ)
    assert environ["PROMETHEUS_MULTIPROC_DIR"] == created and os.path.isdir(created)
    os.rmdir(created)


def test_the_master_imports_no_metrics_before_the_metrics_directory_is_set():
    # prometheus-client picks single- or multi-process mode when first imported: in the master,
    # loading the config and the worker class must not import it (the workers would inherit it).
    import subprocess
    import sys

    code = ("import sys, core.gunicorn_conf, core.web.liveness; "
            "[core.gunicorn_conf.configure({}, app) for app in ('server', 'worker')]; "
            "print('prometheus_client' in sys.modules)")
    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
