"""Test inputs made at test time: images with PIL, speech with espeak-ng, containers with ffmpeg."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please send the quarterly report to Maria before Friday.",
    "Our train to Berlin leaves at seven in the morning.",
    "The weather will be sunny with a light breeze from the west.",
    "Remember to water the tomatoes in the garden every evening.",
    "The museum opens a new exhibition about ancient Egypt next week.",
    "My sister bought a red bicycle with a silver basket.",
    "Turn left at the bakery and walk two blocks to the library.",
]


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    """An image as file bytes in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (random low-frequency colour field with some texture)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    texture = rng.integers(-12, 13, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + texture, 0, 255).astype(np.uint8))


def require(tool: str) -> str:
    """Path of a command-line tool, or a clear failure (CI installs espeak-ng and ffmpeg)."""
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} is required for this test: run `make setup` (apt-get install {tool})")
    return path


def speak(text: str, path: Path, speed: int = 160) -> Path:
    """Synthesise ``text`` to a WAV file with espeak-ng."""
    subprocess.run([require("espeak-ng"), "-s", str(speed), "-w", str(path), text], check=True)
    return path


def transcode(source: Path, target: Path, *extra: str) -> Path:
    """Convert audio/video with ffmpeg (format from the target's extension)."""
    subprocess.run([require("ffmpeg"), "-loglevel", "error", "-y", "-i", str(source), *extra, str(target)],
                   check=True)
    return target


def concat_wavs(sources: list[Path], target: Path, gap_s: float = 0.6) -> Path:
    """Join WAV files with short silences (a longer recording from varied sentences)."""
    import wave

    frames, params = [], None
    for source in sources:
        with wave.open(str(source)) as wav:
            params = wav.getparams()
            frames.append(wav.readframes(wav.getnframes()))
    silence = b"\x00" * int(params.framerate * gap_s) * params.sampwidth * params.nchannels
    with wave.open(str(target), "wb") as out:
        out.setparams(params)
        out.writeframes(silence.join(frames))
    return target


def wav_bytes(seconds: float, pitch: float = 0.05) -> bytes:
    """A 16 kHz mono 16-bit WAV of a pure tone, ``seconds`` long, made in memory."""
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        tone = (np.sin(np.arange(int(16000 * seconds)) * pitch) * 8000).astype(np.int16)
        out.writeframes(tone.tobytes())
    return buffer.getvalue()
