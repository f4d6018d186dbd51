"""`python -m worker.job` output names (WHISPER_MODEL=fake): one transcript per input, however names collide."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.media import transcode, wav_bytes

pytestmark = pytest.mark.integration


def run_job(source, output) -> subprocess.CompletedProcess:
    """One task of the job with the fake model (real decoding, hash text)."""
    env = {**os.environ, "LOG_LEVEL": "WARNING", "WHISPER_MODEL": "fake"}
    return subprocess.run([sys.executable, "-m", "worker.job", "--input", str(source), "--output", str(output)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def finished_line(result: subprocess.CompletedProcess) -> dict:
    """The task's final JSON progress line."""
    return [json.loads(line) for line in result.stderr.splitlines() if '"job finished"' in line][-1]


def test_same_stem_and_same_name_in_two_folders_each_get_a_transcript_and_a_rerun_skips_exactly_those_done(
        tmp_path):
    source, output = tmp_path / "in", tmp_path / "out"
    for folder in ("x", "y"):
        (source / folder).mkdir(parents=True)
    (source / "speech.wav").write_bytes(wav_bytes(2, pitch=0.05))
    (tmp_path / "other.wav").write_bytes(wav_bytes(3, pitch=0.11))
    transcode(tmp_path / "other.wav", source / "speech.mp3")
    (source / "x" / "a.wav").write_bytes(wav_bytes(2, pitch=0.07))
    (source / "y" / "a.wav").write_bytes(wav_bytes(2, pitch=0.09))
    first = run_job(source, output)
    assert first.returncode == 0, first.stderr
    names = ("speech.wav", "speech.mp3", "x/a.wav", "y/a.wav")
    bodies = {name: json.loads((output / f"{name}.json").read_text()) for name in names}
    for name in names:  # each input its own files, named after its full name
        assert (output / f"{name}.srt").exists() and (output / f"{name}.vtt").exists()
    assert len({json.dumps(body, sort_keys=True) for body in bodies.values()}) == 4  # none overwrote another
    assert bodies["speech.mp3"]["duration"] == pytest.approx(3, abs=0.1)
    assert not (output / "speech.json").exists() and not (output / "a.json").exists()

    (output / "y" / "a.wav.json").unlink()  # y/a.wav unfinished (its .json is written last)
    before = {path: path.stat().st_mtime_ns for path in output.rglob("*.json") if "failures" not in path.parts}
    second = run_job(source, output)
    assert second.returncode == 0, second.stderr
    assert finished_line(second)["skipped"] == 3 and finished_line(second)["done"] == 4
    after = {path: path.stat().st_mtime_ns for path in output.rglob("*.json") if "failures" not in path.parts}
    assert {path: after[path] for path in before} == before  # the three finished inputs were not redone
    assert json.loads((output / "y" / "a.wav.json").read_text()) == bodies["y/a.wav"]


def test_inputs_that_would_write_the_same_output_are_refused_before_any_work(tmp_path):
    (tmp_path / "speech.wav").write_bytes(wav_bytes(2))
    manifest = tmp_path / "list.txt"  # the same file twice, once as a path, once as a file:// URI
    manifest.write_text(f"{tmp_path}/speech.wav\nfile://{tmp_path}/speech.wav\n")
    result = run_job(manifest, tmp_path / "out")
    assert result.returncode != 0 and "would both write" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json"))
