"""The images as shipped, built (make images) and run with buildah: what a deployment relies on.

Marked ``images``: `make test-images` runs them after `make images`; `make test` and CI skip
them (they build images, minutes and gigabytes). The model outside the image is the same one
in this venv, which runs torch 2.14 where the image runs 2.7.1: vectors match to 1e-4.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import psutil
import pytest
import requests

from bench import containers
from server.demo.shapes import draw_shape
from tests.conftest import ROOT, free_port, run_service
from tests.images.conftest import API_KEY, SERVICES, require_image
from tests.media import encode, speak

pytestmark = [pytest.mark.images, pytest.mark.timeout(1200)]
KEY = {"X-API-Key": API_KEY}
OUTSIDE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "API_KEY": API_KEY}
SENTENCE = "Please send the quarterly report to Maria before Friday."
TEXTS = [SENTENCE, "The cat sat on the mat.", "Inference on Cloud Run with one NVIDIA L4."]


def embed(url: str, picture: bytes) -> np.ndarray:
    response = requests.post(url + "/embed", files={"image": ("x.jpg", picture)}, headers=KEY, timeout=60)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["embedding"])


def transcribe(url: str, path) -> str:
    with open(path, "rb") as audio:
        response = requests.post(url + "/transcribe", files={"audio": ("a.wav", audio)}, headers=KEY, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()["text"]


def embed_texts(url: str, texts: list[str]) -> np.ndarray:
    response = requests.post(url + "/embed", json={"texts": texts}, headers=KEY, timeout=60)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["embeddings"])


# Where each image's /health says its model is (the local_model `make images` bakes, under /models).
BAKED = {"server": ("weights", "/models/clip/"), "worker": ("model_dir", "/models/whisper/tiny.en"),
         "textembed": ("weights", "/models/textembed/all-MiniLM-L6-v2")}


@pytest.mark.parametrize("name", SERVICES)
def test_health_is_200_with_the_baked_model(name, started):
    container = started(name)
    field, path = BAKED[SERVICES[name]["package"]]
    health = requests.get(container.url + "/health", headers=KEY, timeout=5)
    assert health.status_code == 200 and health.json()[field].startswith(path), health.text
    assert container.exec(["test", "-e", health.json()[field]]).returncode == 0  # baked into the image
    # The same ready line as `make run`. The metrics monitor logs it on its first ready sample, just
    # after /health turns 200 (core/metrics.py), so wait for it rather than read the log once.
    container.wait_for_line(f"{health.json()['service']} ready: model ", timeout=30)


def test_embed_vectors_equal_the_same_model_outside_the_image(clip_container, tmp_path):
    picture = encode(draw_shape("red", "circle", np.random.default_rng(0), size=(128, 128)))
    inside = embed(clip_container.url, picture)
    with run_service("server", {**OUTSIDE, "CLIP_MODEL": "demo"}, tmp_path) as outside:
        np.testing.assert_allclose(inside, embed(outside.url, picture), atol=1e-4)


def test_text_vectors_equal_the_same_model_outside_the_image(textembed_container, textembed_models_dir, tmp_path):
    inside = embed_texts(textembed_container.url, TEXTS)
    env = {**OUTSIDE, "MODELS_DIR": textembed_models_dir, "TEXTEMBED_MODEL": "all-MiniLM-L6-v2"}
    with run_service("textembed", env, tmp_path, ready_timeout_s=180) as outside:
        outside_vectors = embed_texts(outside.url, TEXTS)
    assert inside.shape == outside_vectors.shape == (len(TEXTS), 384)
    # torch 2.7.1 in the image, this venv's torch outside: the same vectors up to float rounding.
    cosine = np.sum(inside * outside_vectors, axis=1) / (np.linalg.norm(inside, axis=1)
                                                         * np.linalg.norm(outside_vectors, axis=1))
    assert cosine.min() >= 0.999, cosine


def test_transcribe_text_equals_the_same_model_outside_the_image(worker_container, tmp_path):
    audio = speak(SENTENCE, tmp_path / "report.wav")
    inside = transcribe(worker_container.url, audio)
    with run_service("worker", {**OUTSIDE, "WHISPER_MODEL": "tiny.en"}, tmp_path, ready_timeout_s=180) as outside:
        assert inside == transcribe(outside.url, audio)
    assert "report" in inside.lower()


@pytest.mark.parametrize("name", SERVICES)
def test_runs_as_uid_10001_and_cannot_write_its_code(name, started):
    container, code = started(name), f"/app/{SERVICES[name]['package']}"
    served = [p for p in psutil.Process(container.process.pid).children(recursive=True) if "gunicorn" in " ".join(
        p.cmdline())]
    assert served and {p.uids().real for p in served} == {10001}
    probe = container.exec(["python", "-c", f"import os; print(os.getuid()); open('{code}/__init__.py', 'a')"])
    assert probe.stdout.split()[0] == "10001" and "PermissionError" in probe.stderr, probe
    assert container.exec(["touch", f"{code}/new.py"]).returncode != 0


@pytest.mark.parametrize("name", SERVICES)
def test_no_compiler_in_the_runtime_stage(name, started):
    container = started(name)
    found = container.exec(["sh", "-c", "for c in gcc cc c++ g++ clang nvcc; do command -v $c; done; "
                                        "ls /usr/local/cuda/bin/nvcc /opt/conda/bin/nvcc 2>/dev/null; true"])
    assert found.stdout.strip() == ""


@pytest.mark.parametrize("name", SERVICES)
def test_the_images_own_healthcheck_passes_inside_the_container(name, started):
    container = started(name)
    check = container.config["Healthcheck"]["Test"]
    assert check[0] == "CMD"
    port = container.url.rsplit(":", 1)[1]
    assert container.exec(check[1:], env={"PORT": port}, timeout=30).returncode == 0


@pytest.mark.parametrize("name", SERVICES)
def test_serves_with_no_network_at_all(name):
    """In a network namespace with loopback only, the image loads its model and gets warm."""
    image = containers.IMAGES[name]
    require_image(image)
    port = free_port()
    loopback_only = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    with containers.Container(image) as container:
        container.start({"PORT": str(port)}, wrap=loopback_only)
        container.wait_for_line(" ready: model ", timeout=300)
        probe = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/health').status)"
        inside = subprocess.run(["nsenter", "-t", str(container.process.pid), "-n", sys.executable, "-c", probe],
                                capture_output=True, text=True, timeout=30)
        assert inside.stdout.strip() == "200", inside.stderr


def job_lines(output) -> list[dict]:
    """The lines of a "jsonl" job's shards (core/declaration.JobDeclaration)."""
    return [json.loads(line) for shard in output.glob("part-*.jsonl") for line in shard.open()]


def check_vectors(output) -> None:
    lines = job_lines(output)
    assert [line["path"] for line in lines] == ["a.jpg"] and len(lines[0]["embedding"]) > 0


def check_text(output) -> None:
    assert "report" in json.loads((output / "report.wav.json").read_text())["text"].lower()


def check_text_vectors(output) -> None:
    lines = job_lines(output)
    assert [line["path"] for line in lines] == ["notes.txt"] and len(lines[0]["embeddings"][0]) == 384


# Each service's batch job (python -m PACKAGE.job): an input file, and the check of its output folder.
JOBS = {
    "server": ("a.jpg", lambda path: path.write_bytes(encode(draw_shape("blue", "square", np.random.default_rng(1)))),
               check_vectors),
    "worker": ("report.wav", lambda path: speak(SENTENCE, path), check_text),
    "textembed": ("notes.txt", lambda path: path.write_text(SENTENCE), check_text_vectors),
}


@pytest.mark.parametrize("name", SERVICES)
def test_the_job_runs_inside_the_image_on_a_mounted_folder(name, tmp_path):
    image, package = containers.IMAGES[name], SERVICES[name]["package"]
    require_image(image)
    filename, make_input, check = JOBS[package]
    data = tmp_path / "data"
    (data / "input").mkdir(parents=True)
    make_input(data / "input" / filename)
    os.chmod(data, 0o777)  # the jobs run as uid 10001
    with containers.Container(image, volumes=(f"{data}:/data",)) as container:
        done = container.exec(["python", "-m", f"{package}.job", "--input", "/data/input", "--output", "/data/output"])
        assert done.returncode == 0, done.stderr[-2000:]
    check(data / "output")


def test_sigterm_drains_an_in_flight_request(tmp_path):
    require_image(containers.WORKER_IMAGE)
    # Long enough to be in flight at the signal, short enough for the 8 s graceful timeout.
    audio = speak(" ".join([SENTENCE] * 2), tmp_path / "long.wav")
    port = free_port()
    with containers.Container(containers.WORKER_IMAGE) as container:
        container.start({"PORT": str(port), "API_KEY": API_KEY})
        url = f"http://127.0.0.1:{port}"
        container.wait_healthy(url + "/health")
        answer = {}

        def post() -> None:
            try:
                answer["text"] = transcribe(url, audio)
            except Exception as exc:  # noqa: BLE001  (shown in the assertion)
                answer["error"] = repr(exc)

        thread = threading.Thread(target=post)
        thread.start()
        threading.Event().wait(0.5)  # the upload is in the worker now (the transcription takes seconds)
        status = container.terminate(timeout=120)
        thread.join(60)
        log = container.output()
    assert status == 0, log[-2000:]
    assert "report" in answer.get("text", "").lower(), (answer, log[-2000:])


def build(target: str, *extra: str, tag: str, context=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "IMAGE_TAG": tag, **({"BUILD_CONTEXT": str(context)} if context else {})}
    return subprocess.run(["bash", str(ROOT / "scripts/build-images.sh"), target, "--", *extra], env=env,
                          capture_output=True, text=True, timeout=1800)


def diff_ids(image: str) -> list[str]:
    return containers.inspect(image)["Docker"]["rootfs"]["diff_ids"]


def test_a_code_only_change_rebuilds_only_the_application_layer(tmp_path):
    require_image(containers.CLIP_IMAGE)
    context = tmp_path / "context"
    for name in ("core", "server", "worker", "requirements", "model-input"):
        shutil.copytree(ROOT / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Dockerfile.cloudrun", "Dockerfile.slim", ".dockerignore"):
        shutil.copy2(ROOT / name, context / name)
    with open(context / "server" / "routes.py", "a") as routes:
        routes.write("\n# a code-only change\n")
    rebuilt = build("clip", tag="clip-server:code-change", context=context)
    try:
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        before, after = diff_ids(containers.CLIP_IMAGE), diff_ids("clip-server:code-change")
        assert len(before) == len(after)
        changed = [i for i, (old, new) in enumerate(zip(before, after)) if old != new]
        assert changed == [len(after) - 1], changed  # only COPY server/ (weights and deps layers kept)
        print(f"cached steps: {rebuilt.stdout.count('Using cache')}")
    finally:
        containers.buildah("rmi", "clip-server:code-change", check=False)


def test_a_fake_model_never_reaches_an_image():
    failed = build("worker", "--build-arg", "MODEL_ENV=WHISPER_MODEL=fake", tag="whisper-worker:fake-test")
    containers.buildah("rmi", "whisper-worker:fake-test", check=False)
    assert failed.returncode != 0 and "nothing baked into /models" in failed.stdout + failed.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_the_cpu_variants_build_and_serve(name):
    """NAME-cpu, IMAGE:cpu-local (docker-compose.yml's cpu profile runs them); a CPU service's image
    (gpu = false) is its CPU variant already: the same build, from cache."""
    tag = f"{SERVICES[name]['image']}:cpu-local"
    built = build(f"{name}-cpu", tag=tag)
    assert built.returncode == 0, built.stderr[-3000:]
    port = free_port()
    with containers.Container(tag) as container:
        container.start({"PORT": str(port)})
        container.wait_healthy(f"http://127.0.0.1:{port}/health")
    assert "python:3.11-slim" in built.stdout + built.stderr
