"""`python -m server.job`: Cloud Run Jobs batch mode on the real demo CLIP model.

Three tasks share a folder; one is killed midway (it blocks on a stalled read: a FIFO among its
inputs) and rerun, and every input ends with exactly one embedding.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from server.demo.shapes import draw_shape
from tests.conftest import ROOT, wait_until
from tests.media import encode

pytestmark = pytest.mark.integration

SHAPES = [(color, shape) for color in ("red", "green", "blue") for shape in ("circle", "square", "triangle")]


def write_images(folder, n: int) -> list[str]:
    """``n`` demo-model pictures as JPEGs in ``folder`` (two levels), sorted names."""
    names = []
    for i in range(n):
        color, shape = SHAPES[i % len(SHAPES)]
        name = f"{'sub/' if i % 3 == 0 else ''}{i:03d}-{color}-{shape}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(encode(draw_shape(color, shape, np.random.default_rng(i), size=(96, 80)), "JPEG"))
        names.append(name)
    return sorted(names)


def job(task: int, count: int, source, output, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start one task of the job as Cloud Run would (task index and count in the environment)."""
    env = {**os.environ, "CLOUD_RUN_TASK_INDEX": str(task), "CLOUD_RUN_TASK_COUNT": str(count), "LOG_LEVEL": "WARNING",
           **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "server.job", "--input", str(source), "--output", str(output),
                             *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def jsonl(path) -> list[dict]:
    """The records of a JSONL file."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def shard_paths(output) -> list[str]:
    """Every ``path`` in every shard (duplicates kept, so the test can see them)."""
    return [json.loads(line)["path"] for shard in sorted(output.glob("part-*.jsonl"))
            for line in shard.read_text().splitlines()]


def test_three_tasks_one_killed_midway_and_rerun_give_each_input_exactly_once(tmp_path):
    source, output = tmp_path / "in", tmp_path / "out"
    names = write_images(source, 24)
    # Task 1 of 3 holds names[8:16]; a FIFO among them stalls its read like a hung mount would.
    stalled = names[12]
    (source / stalled).unlink()
    os.mkfifo(source / stalled)
    others = [job(task, 3, source, output) for task in (0, 2)]
    victim = job(1, 3, source, output, "--workers", "1", "--checkpoint-every", "1")
    part = output / "part-00001-of-00003.jsonl"
    # Wait for the four inputs before the stall; the FIFO then blocks the task's only thread.
    wait_until(lambda: part.exists() and len(part.read_text().splitlines()) >= 4, timeout_s=120)
    time.sleep(0.5)
    assert victim.poll() is None  # still running, stuck midway
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for task in others:
        assert task.wait(timeout=120) == 0, task.stdout.read()
    checkpointed = [json.loads(line)["path"] for line in part.read_text().splitlines()]
    assert checkpointed == names[8:12]  # everything before the stalled read, nothing after
    (source / stalled).unlink()
    color, shape = stalled.split("-")[1], stalled.split("-")[2].removesuffix(".jpg")
    (source / stalled).write_bytes(encode(draw_shape(color, shape, np.random.default_rng(0), size=(96, 80)), "JPEG"))
    rerun = job(1, 3, source, output)
    assert rerun.wait(timeout=120) == 0, rerun.stdout.read()
    summary = json.loads(rerun.stdout.read().strip().splitlines()[-1])
    assert summary["skipped"] == 4 and summary["done"] == 8  # resumed after the checkpoint
    assert sorted(shard_paths(output)) == names  # every input exactly once
    first = json.loads(part.read_text().splitlines()[0])
    assert len(first["embedding"]) == 64 and abs(np.linalg.norm(first["embedding"]) - 1) < 1e-4
    assert not (output / "failures").exists()


def test_failures_are_listed_and_the_task_exits_non_zero_for_a_retry(tmp_path):
    source, output = tmp_path / "in", tmp_path / "out"
    names = write_images(source, 3)
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    manifest = tmp_path / "inputs.txt"
    manifest.write_text("".join(f"{source / name}\n" for name in names + ["broken.png"]))
    task = job(0, 1, manifest, output)
    assert task.wait(timeout=120) == 1
    (failure,) = jsonl(output / "failures" / "part-00000-of-00001.jsonl")
    assert failure["path"] == str(source / "broken.png") and failure["error"]["code"] == "invalid_image"
    assert sorted(shard_paths(output)) == sorted(str(source / name) for name in names)
    # The embedding is the model's, not a placeholder: a red circle is nearest its own caption.
    from core.from_storage.job_entry import start_service
    from server.app import CLIP
    from server.backends import TEXT
    from server.settings import ServerSettings

    service = start_service(CLIP, ServerSettings.from_env({}))
    lines = {record["path"]: record["embedding"] for record in jsonl(output / "part-00000-of-00001.jsonl")}
    captions = [f"a photo of a {c} {s}" for c, s in SHAPES]
    text = np.stack(service.runner.run(TEXT, captions))
    for path, vector in lines.items():
        color, shape = path.removesuffix(".jpg").split("-")[-2:]
        assert captions[int(np.argmax(text @ np.asarray(vector)))] == f"a photo of a {color} {shape}"


def test_the_job_decodes_within_a_memory_budget(tmp_path):
    # 1 MiB of decode memory: the small pictures wait their turn (none fails with 429), the large
    # PNG could never fit and is listed as a failure with the 413 code, as a request would get.
    from PIL import Image

    source, output = tmp_path / "in", tmp_path / "out"
    names = write_images(source, 6)
    Image.new("RGB", (2000, 2000), "white").save(source / "large.png")
    env = {**os.environ, "DECODE_MEMORY_BUDGET_MB": "1", "LOG_LEVEL": "WARNING"}
    task = subprocess.run([sys.executable, "-m", "server.job", "--input", str(source), "--output", str(output)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert task.returncode == 1, task.stderr
    (failure,) = jsonl(output / "failures" / "part-00000-of-00001.jsonl")
    assert failure["path"] == "large.png" and failure["error"]["code"] == "input_too_large_to_decode"
    assert sorted(shard_paths(output)) == names


def test_three_tasks_on_cloud_storage_one_killed_midway_and_rerun(tmp_path, bucket):
    """The same on gs:// (the storage emulator): a manifest in the bucket, shards written back there."""
    from core.from_storage import storage

    source = tmp_path / "in"
    names = write_images(source, 36)
    uris = []
    for name in names:
        uris.append(f"gs://{bucket}/photos/{name}")
        storage.write_bytes(uris[-1], (source / name).read_bytes(), content_type="image/jpeg")
    manifest = f"gs://{bucket}/lists/photos.txt"
    storage.write_bytes(manifest, "".join(uri + "\n" for uri in uris).encode())
    output = f"gs://{bucket}/embeddings"
    part = f"{output}/part-00001-of-00003.jsonl"
    others = [job(task, 3, manifest, output) for task in (0, 2)]
    # No FIFO to stall a read on gs://: the victim runs the simulated accelerator at 300 ms a model
    # call, one input at a time, so its 12 inputs take seconds and the kill lands midway on any
    # machine (with the demo model a fast machine finished all 12 before the kill).
    victim = job(1, 3, manifest, output, "--workers", "1", "--checkpoint-every", "1",
                 env={"CLIP_MODEL": "sim:ViT-B-32", "SIM_BATCH_BASE_MS": "300", "SIM_PER_ITEM_MS": "0"})
    wait_until(lambda: storage.exists(part), timeout_s=120, interval_s=0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    checkpointed = [json.loads(line)["path"] for line in storage.read_bytes(part).decode().splitlines()]
    assert 1 <= len(checkpointed) < 12 and checkpointed == uris[12:12 + len(checkpointed)]  # killed midway
    for task in others:
        assert task.wait(timeout=120) == 0, task.stdout.read()
    rerun = job(1, 3, manifest, output)
    assert rerun.wait(timeout=120) == 0, rerun.stdout.read()
    paths = [json.loads(line)["path"] for location in storage.list_prefix(output)
             for line in storage.read_bytes(location).decode().splitlines()]
    assert sorted(paths) == uris  # every input exactly once
