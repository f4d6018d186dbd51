"""Speech made at test time (espeak-ng, ffmpeg) and a Whisper worker (gunicorn, tiny.en) for the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_service
from tests.media import SENTENCES, concat_wavs, speak, transcode

# Words tiny.en reliably hears in each espeak-ng sentence (it garbles a few others).
KEY_WORDS = [
    ("lazy", "dog"), ("quarterly", "report", "friday"), ("train", "morning"),
    ("weather", "breeze", "west"), ("water", "tomatoes", "garden"), ("museum", "exhibition", "egypt"),
    ("sister", "silver"), ("left", "library"),  # tiny.en hears espeak-ng 1.51+deb12u2's "bakery" as "Mercury"
]
CONTAINERS = {  # extension -> extra ffmpeg arguments
    "wav": (), "mp3": (), "flac": (), "ogg": ("-c:a", "libvorbis"), "opus": ("-c:a", "libopus"),
    "m4a": ("-c:a", "aac"), "webm": ("-c:a", "libopus"),
}


@dataclass
class Speech:
    """Paths of the generated recordings."""

    sentences: list[Path]
    long: Path
    containers: dict[str, Path]
    video: Path
    video_without_audio: Path
    silence: Path
    stereo_44k: Path
    over_limit: Path  # 11 minutes of near-silence, tiny as Opus: over the tests' 600 s limit


def normalise(text: str) -> str:
    """Lower-case words without punctuation, for key-word checks."""
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


def assert_heard(text: str, words) -> None:
    """Every key word is in the transcript."""
    heard = normalise(text).split()
    missing = [word for word in words if word not in heard]
    assert not missing, f"missing {missing} in {text!r}"


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> Speech:
    """All recordings the worker tests use, generated once per session."""
    root = tmp_path_factory.mktemp("speech")
    sentences = [speak(text, root / f"sentence{n}.wav") for n, text in enumerate(SENTENCES)]
    long = concat_wavs(sentences * 2, root / "long.wav")  # about a minute, more than one 30 s chunk
    containers = {ext: transcode(sentences[1], root / f"report.{ext}", *args) for ext, args in CONTAINERS.items()}
    video = transcode(sentences[2], root / "train.mp4", "-f", "lavfi", "-i", "color=c=blue:s=64x64:d=5",
                      "-shortest", "-c:v", "libx264", "-c:a", "aac")
    no_audio = transcode(sentences[0], root / "silent-video.mp4", "-f", "lavfi", "-i", "color=c=red:s=64x64:d=2",
                         "-map", "1:v", "-c:v", "libx264")
    silence = transcode(sentences[0], root / "silence.wav", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
                        "-map", "1:a", "-t", "4")
    stereo = transcode(sentences[3], root / "weather-44k-stereo.wav", "-ac", "2", "-ar", "44100")
    over_limit = transcode(sentences[0], root / "eleven-minutes.opus", "-f", "lavfi", "-i",
                           "anullsrc=r=16000:cl=mono", "-map", "1:a", "-t", "660", "-c:a", "libopus", "-b:a", "6k")
    return Speech(sentences, long, containers, video, no_audio, silence, stereo, over_limit)


@pytest.fixture(scope="session")
def whisper_service(tmp_path_factory):
    """``python -m worker`` on loopback with the embedded tiny.en, once per test session."""
    env = {"WHISPER_MODEL": "tiny.en", "WEB_THREADS": "16", "MAX_WAIT_MS": "100", "MAX_AUDIO_SECONDS": "600",
           "CALLBACK_SECRET": "dev-secret", "CALLBACK_ALLOWED_HOSTS": "localhost:9000"}  # README callback examples
    env["EVENTS_OUTPUT"] = str(tmp_path_factory.mktemp("worker-events"))  # configured, as deployed
    with run_service("worker", env, tmp_path_factory.mktemp("worker"), ready_timeout_s=180) as running:
        yield running


@pytest.fixture(scope="session")
def fake_whisper_service(tmp_path_factory):
    """``python -m worker`` with WHISPER_MODEL=fake: real HTTP, decoding and batching; hash text, no model."""
    env = {"WHISPER_MODEL": "fake", "WEB_THREADS": "16", "MAX_WAIT_MS": "20", "MAX_AUDIO_SECONDS": "600"}
    with run_service("worker", env, tmp_path_factory.mktemp("fake-worker"), ready_timeout_s=60) as running:
        yield running
