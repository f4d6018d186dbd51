"""The simulated accelerator: one lock across processes, the a + b x batch model, real-sized vectors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from server.app import create_app
from server.backends import IMAGE, TEXT, make_backend
from server.backends.sim import SimClipBackend, read_busy
from server.settings import ServerSettings
from tests.conftest import ROOT, wait_until
from tests.media import encode, photo_like

PNG_A = encode(photo_like(300, 200, seed=1), "PNG")
PNG_B = encode(photo_like(300, 200, seed=2), "PNG")


def sim_backend(tmp_path, **overrides) -> SimClipBackend:
    settings = ServerSettings.from_env({}, clip_model="sim:ViT-B-32", sim_lock_path=str(tmp_path / "gpu.lock"),
                                       **overrides)
    backend = make_backend(settings)
    backend.load()
    return backend


@pytest.mark.unit
def test_vectors_are_real_sized_unit_float32_and_deterministic_per_input(tmp_path):
    backend = sim_backend(tmp_path, sim_batch_base_ms=0.0, sim_per_item_ms=0.0)
    assert isinstance(backend, SimClipBackend) and backend.describe()["device"] == "sim"
    pixels = [backend.preprocess(IMAGE, data) for data in (PNG_A, PNG_B, PNG_A)]
    assert pixels[0].shape == (3, 224, 224) and pixels[0].dtype == np.float32  # the real input size
    a, b, a_again = backend.forward(IMAGE, pixels)
    assert a.shape == (512,) and a.dtype == np.float32
    assert np.isclose(np.linalg.norm(a), 1.0, atol=1e-5)
    assert np.array_equal(a, a_again) and not np.allclose(a, b)
    assert np.array_equal(backend.forward(IMAGE, [pixels[1]])[0], b)  # independent of batch company
    tokens = backend.preprocess(TEXT, "a photo of a cat")
    assert tokens.shape == (77,)
    assert backend.forward(TEXT, [tokens])[0].shape == (512,)


@pytest.mark.unit
def test_unknown_architecture_is_refused_at_load(tmp_path):
    settings = ServerSettings.from_env({}, clip_model="sim:ResNet-9000", sim_lock_path=str(tmp_path / "l"))
    with pytest.raises(ValueError, match="ViT-B-32"):
        make_backend(settings).load()


@pytest.mark.unit
def test_forward_takes_base_plus_per_item_time_and_counts_it(tmp_path):
    backend = sim_backend(tmp_path, sim_batch_base_ms=40.0, sim_per_item_ms=10.0)
    items = [backend.preprocess(IMAGE, PNG_A)] * 8
    timings = {}
    for n in (1, 8):
        started = time.monotonic()
        backend.forward(IMAGE, items[:n])
        timings[n] = time.monotonic() - started
    assert timings[1] >= 0.050 and timings[8] >= 0.120  # 40 + 10 x n ms, never less
    assert timings[8] - timings[1] == pytest.approx(0.070, abs=0.060)  # the per-item slope
    held, modelled, calls, counted = read_busy(str(tmp_path / "gpu.lock"))
    assert (calls, counted) == (2, 9)
    assert modelled == pytest.approx(0.170)
    assert 0.170 <= held <= timings[1] + timings[8]


_WORKER = textwrap.dedent("""
    import json, sys, time
    from server.backends import IMAGE, make_backend
    from server.settings import ServerSettings
    lock_path, start_at = sys.argv[1], float(sys.argv[2])
    settings = ServerSettings.from_env({}, clip_model="sim:ViT-B-32", sim_lock_path=lock_path,
                                       sim_batch_base_ms=150.0, sim_per_item_ms=0.0)
    backend = make_backend(settings)
    backend.load()
    item = [__import__("numpy").zeros((3, 224, 224), "float32")]
    time.sleep(max(0.0, start_at - time.time()))
    spans = []
    for _ in range(3):
        began = time.time()
        backend.forward(IMAGE, item)
        spans.append((began, time.time()))
    print(json.dumps(spans))
""")


def _two_processes(lock_a: str, lock_b: str) -> float:
    """Wall time from the first forward to the last one of two processes doing 3 x 150 ms each."""
    start_at = time.time() + 3.0  # both processes have imported and loaded by then
    processes = [subprocess.Popen([sys.executable, "-c", _WORKER, lock, str(start_at)], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True) for lock in (lock_a, lock_b)]
    spans = [span for process in processes for span in json.loads(process.communicate(timeout=60)[0])]
    assert all(process.returncode == 0 for process in processes)
    return max(end for _, end in spans) - min(begin for begin, _ in spans)


@pytest.mark.integration
def test_the_lock_serialises_forward_calls_across_processes(tmp_path):
    shared = str(tmp_path / "shared.lock")
    assert _two_processes(shared, shared) >= 6 * 0.150  # one simulated GPU: 6 forwards one after another
    assert read_busy(shared)[2] == 6
    # Control: with separate locks the two processes overlap, so the assertion above can fail.
    assert _two_processes(str(tmp_path / "a.lock"), str(tmp_path / "b.lock")) < 6 * 0.150


@pytest.mark.unit
def test_embed_through_the_app_answers_512_floats(tmp_path):
    settings = ServerSettings.from_env({}, clip_model="sim:ViT-B-32", log_level="WARNING",
                                       sim_lock_path=str(tmp_path / "gpu.lock"))
    client = create_app(settings).test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 10)
    body = client.post("/embed", data={"image": (io.BytesIO(PNG_A), "a.png")}).get_json()
    assert body["model"] == "sim:ViT-B-32" and body["dim"] == 512 and len(body["embedding"]) == 512
    again = client.post("/embed", data={"image": (io.BytesIO(PNG_A), "a.png")}).get_json()
    assert again["embedding"] == body["embedding"]
    assert client.get("/health").get_json()["simulated"]["per_item_ms"] == 0.25


@pytest.mark.integration
def test_gunicorn_workers_share_one_simulated_gpu(tmp_path):
    from tests.conftest import run_service

    lock = str(tmp_path / "gpu.lock")
    env = {"CLIP_MODEL": "sim:ViT-B-32", "WEB_WORKERS": "2", "SIM_LOCK_PATH": lock, "LOG_LEVEL": "WARNING"}
    with run_service("server", env, tmp_path) as service:
        # Each worker warms up one image and one text batch on the same lock file.
        wait_until(lambda: read_busy(lock)[2] >= 4, 30)
        import requests

        def embed():  # a worker that has just warmed up may answer 503 for a moment; that costs no model time
            response = requests.post(service.url + "/embed", files={"image": ("a.png", PNG_A)}, timeout=30)
            return response if response.status_code == 200 else None

        assert wait_until(embed, 10).json()["dim"] == 512
        assert read_busy(lock)[2:] == (5, 4 * 32 + 1)
