"""Decode any upload to 16 kHz mono float32 with PyAV (its bundled FFmpeg), safely.

- The duration limit is checked from the container's metadata before decoding, so an hour-long
  upload over the limit is refused in milliseconds; when a container does not say how long it
  is, decoding stops as soon as the limit is passed.
- Every failure on client bytes is a 4xx: empty upload, not media, an image, a video with no
  audio track. A truncated file decodes as far as its data goes and the response says so.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import av
import numpy as np

from core.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia

SAMPLE_RATE = 16000
_IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")


@dataclass
class DecodedAudio:
    """Mono float32 samples at 16 kHz, plus what the decoder had to say about the input."""

    samples: np.ndarray
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.samples) / SAMPLE_RATE


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _declared_seconds(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def decode_audio(data: bytes, max_seconds: float) -> DecodedAudio:
    """Upload bytes -> DecodedAudio; raises InvalidInput / UnsupportedMedia / PayloadTooLarge."""
    if not data:
        raise InvalidInput("the audio file is empty", code="empty_file")
    if _looks_like_image(data):
        raise UnsupportedMedia("this is an image, not audio; send wav, mp3, flac, ogg/opus, m4a, webm or mp4")
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, IndexError, OSError) as err:
        raise InvalidInput(f"not a decodable audio or video file ({type(err).__name__})",
                           code="invalid_audio") from None
    with container:
        if not container.streams.audio:
            found = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
            raise InvalidInput(f"the file has no audio stream (found: {found})", code="no_audio_stream")
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > max_seconds:
            raise PayloadTooLarge(f"audio is {declared:.0f} s long; the limit is {max_seconds:.0f} s "
                                  "(MAX_AUDIO_SECONDS)", code="audio_too_long")
        decoded = _decode_stream(container, stream, max_seconds)
    if declared is not None and decoded.duration < declared - 1.0:
        decoded.warnings.append(f"decoded {decoded.duration:.1f} s of the {declared:.1f} s the file "
                                "declares; it may be truncated")
    return decoded


def _decode_stream(container, stream, max_seconds: float) -> DecodedAudio:
    resampler = av.audio.resampler.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    max_samples = int(max_seconds * SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    total = 0
    warnings: list[str] = []
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except (av.error.FFmpegError, OSError) as err:
            warnings.append(f"the input is damaged or truncated; transcribed the audio before that point ({err})")
            break
        try:
            frames = packet.decode()
        except (av.error.FFmpegError, ValueError):
            continue  # a corrupt packet: skip it, as FFmpeg's command line does
        for frame in frames:
            frame.pts = None  # resampler rejects non-monotonic timestamps in damaged files
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1))
                total += pieces[-1].size
        if total > max_samples:
            raise PayloadTooLarge(f"audio is longer than the limit of {max_seconds:.0f} s "
                                  "(MAX_AUDIO_SECONDS)", code="audio_too_long")
    for out in resampler.resample(None):  # flush
        pieces.append(out.to_ndarray().reshape(-1))
    samples = np.concatenate(pieces).astype(np.float32, copy=False) if pieces else np.zeros(0, np.float32)
    if samples.size == 0 and not warnings:
        raise InvalidInput("the file contains no decodable audio", code="invalid_audio")
    if samples.size == 0:
        raise InvalidInput("the file is damaged: no audio could be decoded", code="invalid_audio")
    return DecodedAudio(samples, warnings)
