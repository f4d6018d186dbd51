"""`python -m worker.job`: Cloud Run Jobs batch mode with the real tiny.en on generated speech."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.media import SENTENCES
from tests.worker.conftest import assert_heard

pytestmark = pytest.mark.integration


def run_job(source, output, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """One task of the job (task 0 of 1), run to the end."""
    env = {**os.environ, "LOG_LEVEL": "WARNING", "WHISPER_MODEL": "tiny.en", **(env or {})}
    return subprocess.run([sys.executable, "-m", "worker.job", "--input", str(source), "--output", str(output), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_transcripts_per_input_failures_listed_and_a_rerun_skips_finished_files(tmp_path, speech):
    source, output = tmp_path / "in", tmp_path / "out"
    (source / "calls").mkdir(parents=True)
    shutil.copy(speech.sentences[1], source / "report.wav")
    shutil.copy(speech.containers["m4a"], source / "calls" / "report.m4a")
    shutil.copy(speech.sentences[4], source / "garden.wav")
    (source / "calls" / "broken.mp3").write_bytes(b"ID3" + b"\0" * 500)
    first = run_job(source, output, "--option", "language=en")
    assert first.returncode == 1, first.stderr  # one input failed: the task asks to be retried
    for stem, words in (("report.wav", SENTENCES[1]), ("calls/report.m4a", SENTENCES[1]),
                        ("garden.wav", SENTENCES[4])):
        body = json.loads((output / f"{stem}.json").read_text())
        assert_heard(body["text"], words)
        assert body["segments"] and body["language"] == "en"
        assert (output / f"{stem}.srt").read_text().startswith("1\n00:00:0")
        assert (output / f"{stem}.vtt").read_text().startswith("WEBVTT")
    failures = (output / "failures" / "part-00000-of-00001.jsonl").read_text().splitlines()
    (failure,) = [json.loads(line) for line in failures]
    assert failure["path"] == "calls/broken.mp3" and failure["error"]["code"] == "invalid_audio"

    (source / "calls" / "broken.mp3").unlink()  # the operator removes the bad file and retries
    before = {path: path.stat().st_mtime_ns for path in output.rglob("*.json")}
    second = run_job(source, output, "--option", "language=en")
    assert second.returncode == 0, second.stderr
    assert {path: path.stat().st_mtime_ns for path in output.rglob("*.json")} == before  # nothing recomputed
    assert (output / "failures" / "part-00000-of-00001.jsonl").read_text() == ""


def test_a_bad_option_stops_the_task_before_any_work(tmp_path, speech):
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(speech.sentences[0], source / "a.wav")
    result = run_job(source, tmp_path / "out", "--option", "beam_size=zero")
    assert result.returncode != 0 and "beam_size" in result.stderr
    assert not (tmp_path / "out" / "a.wav.json").exists()


def test_the_job_decodes_within_a_memory_budget(tmp_path, speech):
    # 1 MiB of decode memory holds a 4 s sentence (128 KB of PCM), never the minute-long recording
    # (about 2 MB): that one is listed with the 413 code a request would get, the rest transcribed.
    source, output = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    shutil.copy(speech.sentences[1], source / "report.wav")
    shutil.copy(speech.long, source / "long.wav")
    result = run_job(source, output, "--option", "language=en", env={"DECODE_MEMORY_BUDGET_MB": "1"})
    assert result.returncode == 1, result.stderr
    assert_heard(json.loads((output / "report.wav.json").read_text())["text"], SENTENCES[1])
    failures = (output / "failures" / "part-00000-of-00001.jsonl").read_text().splitlines()
    (failure,) = [json.loads(line) for line in failures]
    assert failure["path"] == "long.wav" and failure["error"]["code"] == "input_too_large_to_decode"
