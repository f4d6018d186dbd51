"""`python -m inference_client embed DIR` over three real CLIP servers, one killed mid-run: every image once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from contextlib import ExitStack

import numpy as np
import pytest
from inference_client import ClipClient, WorkerPool, embed_directory
from inference_client.embed_folder import concurrency_for, read_done

from tests.clients.conftest import QUICK_STOP, kill, start_together
from tests.conftest import ROOT, run_service, wait_until
from tests.media import encode, photo_like

pytestmark = [pytest.mark.integration, pytest.mark.slow]
IMAGES = 90


@pytest.fixture(scope="module")
def three_servers(tmp_path_factory):
    """Three fake-model CLIP servers (real gunicorn and HTTP); batches wait 30 ms so a run takes a while."""
    env = {"CLIP_MODEL": "fake", "WEB_THREADS": "8", "MAX_WAIT_MS": "30", "MAX_BATCH_SIZE": "4", **QUICK_STOP}
    with ExitStack() as stack:
        yield start_together(stack, [run_service("server", env, tmp_path_factory.mktemp(f"embed-{n}"))
                                     for n in range(3)])


@pytest.fixture
def folder(tmp_path):
    """90 photos in two sub-folders, plus a broken one and a text file that is not an image."""
    root = tmp_path / "photos"
    for n in range(IMAGES):
        sub = root / ("a" if n % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"photo{n}.jpg").write_bytes(encode(photo_like(400, 300, seed=n), "JPEG"))
    (root / "notes.txt").write_text("not an image")
    return root


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "inference_client", "embed", *args], cwd=ROOT, env=os.environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_server_loses_nothing_and_a_rerun_writes_each_image_once(three_servers, folder):
    out = folder / "vectors.jsonl"
    victim = three_servers[2]
    run = cli(str(folder), "--servers", ",".join(s.url for s in three_servers), "--no-progress")
    wait_until(lambda: (out.exists() and len(out.read_text().splitlines()) >= 10) or run.poll() is not None,
               timeout_s=120)
    kill(victim)
    _, stderr = run.communicate(timeout=180)
    assert f"retry: {victim.url}" in stderr or f"out: {victim.url}" in stderr, stderr  # the kill was noticed
    rerun = cli(str(folder), "--servers", ",".join(s.url for s in three_servers[:2]), "--no-progress")
    _, stderr_again = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, stderr_again
    written = lines(out)
    paths = [line["path"] for line in written]
    assert sorted(paths) == sorted(f"{'a' if n % 2 else 'b'}/photo{n}.jpg" for n in range(IMAGES))  # once each
    assert {line["model"] for line in written} == {"fake"} and {len(line["vector"]) for line in written} == {64}
    # Each vector is that image's (the fake model hashes its input: a mix-up would show).
    check = ClipClient(three_servers[0].url)
    for line in written[:5]:
        expected = check.embed_image(folder / line["path"])
        assert np.allclose(line["vector"], expected, atol=1e-6), line["path"]
    embedded, skipped = map(int, re.search(r"embedded (\d+), skipped (\d+)", stderr_again).groups())
    assert embedded + skipped == IMAGES  # the rerun did exactly what the first run left


def test_a_killed_client_keeps_every_line_it_wrote_and_a_rerun_finishes(three_servers, folder):
    out = folder / "vectors.jsonl"
    run = cli(str(folder), "--servers", ",".join(s.url for s in three_servers[:2]), "--no-progress")
    wait_until(lambda: (out.exists() and len(out.read_text().splitlines()) >= 10) or run.poll() is not None,
               timeout_s=120)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    kept = read_done(out)  # a torn last line is dropped here, the complete ones all count
    assert len(kept) >= 10
    with open(out, "a") as handle:
        handle.write('{"path": "b/photo0.jpg", "model": "fa')  # what a kill in mid-write leaves
    rerun = cli(str(folder), "--servers", ",".join(s.url for s in three_servers[:2]), "--no-progress")
    _, stderr = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, stderr
    assert f"skipped {len(kept)} (already in the file)" in stderr
    paths = [line["path"] for line in lines(out)]
    assert len(paths) == len(set(paths)) == IMAGES


def test_concurrency_follows_the_servers_batch_sizes_and_unreadable_images_are_listed(three_servers, folder):
    pool = WorkerPool([s.url for s in three_servers[:2]], "")
    assert concurrency_for(pool) == 2 * 4  # MAX_BATCH_SIZE=4 on each
    (folder / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    summary = embed_directory(pool, folder, progress=False)
    assert len(summary.embedded) == IMAGES and list(summary.failed) == ["a/broken.png"]
    assert summary.failed["a/broken.png"].startswith("invalid_image: ")
    assert summary.failures_file.read_text().startswith("file\terror\na/broken.png\tinvalid_image")
    again = embed_directory(pool, folder, progress=False)
    assert not again.embedded and len(again.skipped) == IMAGES and list(again.failed) == ["a/broken.png"]
