"""`python -m inference_client transcribe` over three real workers, one killed mid-run: nothing is lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from inference_client import WorkerPool, transcribe_directory

from tests.clients.conftest import API_KEY, kill
from tests.conftest import ROOT, free_port, wait_until
from tests.media import SENTENCES, transcode
from tests.worker.conftest import assert_heard, assert_heard_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def cli(*args: str, timeout: float = 180) -> subprocess.Popen:
    """The command as a user runs it (stderr is not a terminal: plain progress lines)."""
    env = {**os.environ, "WHISPER_WORKER_API_KEY": API_KEY}
    return subprocess.Popen([sys.executable, "-m", "inference_client", "transcribe", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_worker_loses_nothing_and_a_rerun_resumes(workers, clips, tmp_path):
    source, out = tmp_path / "recordings", tmp_path / "transcripts"
    (source / "more").mkdir(parents=True)
    expected = {}  # input name -> the sentence spoken
    for n, clip in enumerate(clips[:6]):
        shutil.copy(clip, source / f"clip{n}.wav")
        expected[f"clip{n}.wav"] = SENTENCES[n]
    for n in (6, 7):  # FLAC: lossless, so tiny.en hears the same words as in the WAV
        transcode(clips[n], source / "more" / f"voice{n}.flac")
        expected[f"more/voice{n}.flac"] = SENTENCES[n]
    (source / "broken.wav").write_bytes(b"RIFF, but really just text")

    victim = workers[2]
    run = cli(str(source), "--workers", ",".join(w.url for w in workers), "--out", str(out), "--format", "srt",
              "--concurrency", "3", "--no-progress")
    # Kill it (gunicorn master and worker, no goodbye) once the first transcript is written: one call
    # in flight per worker, so it is most likely busy, and two thirds of the files are still to come.
    wait_until(lambda: next(out.rglob("*.srt"), None) is not None or run.poll() is not None, timeout_s=120)
    kill(victim)
    stdout, stderr = run.communicate(timeout=180)

    assert run.returncode == 1, stderr  # one file cannot be transcribed, and says so
    failures = (out / "failures.tsv").read_text().splitlines()
    assert failures[0] == "file\terror" and len(failures) == 2
    assert failures[1].startswith("broken.wav\tinvalid_audio: "), failures
    subtitles = {name: (out / name).with_suffix(".srt").read_text() for name in expected}
    assert all(text.startswith("1\n00:00:0") for text in subtitles.values()), subtitles
    assert_heard_all((subtitles[name], script) for name, script in expected.items())
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # outputs are only ever renamed into place
    assert f"retry: {victim.url}" in stderr or f"out: {victim.url}" in stderr, stderr  # the kill was noticed
    assert f"transcribed {len(expected)}, skipped 0 (output exists), failed 1" in stderr

    # A rerun skips what is done and asks no worker: none is listening at this URL.
    (source / "broken.wav").unlink()
    rerun = cli(str(source), "--workers", f"http://127.0.0.1:{free_port()}", "--out", str(out), "--format", "srt")
    _, stderr = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, stderr
    assert f"transcribed 0, skipped {len(expected)} (output exists), failed 0" in stderr
    assert not (out / "failures.tsv").exists()  # the stale list goes once nothing fails

    # A lost output is transcribed again on the next run.
    (out / "more" / "voice7.srt").unlink()
    again = cli(str(source), "--workers", workers[0].url, "--out", str(out), "--format", "srt")
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0 and f"transcribed 1, skipped {len(expected) - 1}" in stderr, stderr
    assert_heard((out / "more" / "voice7.srt").read_text(), SENTENCES[7])


def test_usage_errors_exit_2(tmp_path):
    no_workers = cli(str(tmp_path), "--workers", "", "--out", str(tmp_path / "out"))
    assert no_workers.wait(timeout=60) == 2 and "WORKER_URLS" in no_workers.stderr.read()
    no_dir = cli(str(tmp_path / "missing"), "--workers", "http://127.0.0.1:9", "--out", str(tmp_path / "out"))
    assert no_dir.wait(timeout=60) == 2 and "not a directory" in no_dir.stderr.read()


def test_json_outputs_through_the_library_call(workers, clips, tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    shutil.copy(clips[2], source / "train.wav")
    summary = transcribe_directory(WorkerPool(workers[0].url, API_KEY), source, out, response_format="verbose_json",
                                   progress=False, options={"word_timestamps": True})
    assert summary.transcribed == ["train.wav"] and not summary.failed and summary.failures_file is None
    result = json.loads((out / "train.json").read_text())
    assert_heard(result["text"], SENTENCES[2])
    assert "words" in result["segments"][0]
