"""Decode any upload to 16 kHz mono int16 PCM with PyAV (its bundled FFmpeg), safely and compactly.

- Decoding streams packet by packet into one int16 buffer sized from the container's declared
  duration: an hour is 115 MB, not the 230 MB of float32 plus a second copy to join the pieces.
  ``to_float`` converts a slice (a VAD block, one 30 s chunk) when the model needs it, exactly as
  faster-whisper's own ``decode_audio`` does (s16 / 32768).
- ``AudioUpload`` opens the upload once and tells the memory it will need from its header alone,
  before any decoding, so an admission budget can refuse it first; ``decode()`` then reads it.

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
BYTES_PER_SAMPLE = 2  # int16 PCM, mono
_IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")


@dataclass
class DecodedAudio:
    """Mono int16 samples at 16 kHz, plus what the decoder had to say about the input."""

    samples: np.ndarray
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.samples) / SAMPLE_RATE

    def to_float(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """float32 in [-1, 1) of samples[start:end] (a fresh array; the int16 buffer stays)."""
        return to_float(self.samples[start:end])


def to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM -> float32 as faster-whisper's decode_audio makes it."""
    if pcm.dtype == np.float32:
        return pcm
    return pcm.astype(np.float32) / 32768.0


class AudioUpload:
    """An opened upload: its declared length (memory to reserve) now, its samples on ``decode()``.

    One FFmpeg open serves both: probing a container reads and decodes its first packets, which
    costs about as much as decoding a short clip, so the estimate must not open it a second time.
    Use as a context manager (the container is closed on exit).
    """

    def __init__(self, data: bytes, max_seconds: float):
        if not data:
            raise InvalidInput("the audio file is empty", code="empty_file")
        if _looks_like_image(data):
            raise UnsupportedMedia("this is an image, not audio; send wav, mp3, flac, ogg/opus, m4a, webm or mp4")
        try:
            self.container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
        except (av.error.FFmpegError, ValueError, IndexError, OSError) as err:
            raise InvalidInput(f"not a decodable audio or video file ({type(err).__name__})",
                               code="invalid_audio") from None
        if not self.container.streams.audio:
            found = ", ".join(sorted({s.type for s in self.container.streams})) or "nothing"
            self.container.close()
            raise InvalidInput(f"the file has no audio stream (found: {found})", code="no_audio_stream")
        self.max_seconds = max_seconds
        self.stream = self.container.streams.audio[0]
        self.declared = _declared_seconds(self.container, self.stream)
        if self.declared is not None and self.declared > max_seconds:
            self.container.close()
            raise PayloadTooLarge(f"audio is {self.declared:.0f} s long; the limit is {max_seconds:.0f} s "
                                  "(MAX_AUDIO_SECONDS)", code="audio_too_long")

    @property
    def decoded_bytes(self) -> int:
        """Bytes the decoded PCM will take (duration x 16000 x 2), from the header alone.

        A container that does not declare its duration is charged ``max_seconds``: what decoding
        would stop at.
        """
        seconds = self.max_seconds if self.declared is None else self.declared
        return int(seconds * SAMPLE_RATE) * BYTES_PER_SAMPLE

    def decode(self) -> DecodedAudio:
        """The whole stream as 16 kHz mono int16 (raises 4xx for undecodable or too long audio).

        Closes the container: the request holds only the PCM from here on.
        """
        try:
            decoded = _decode_stream(self.container, self.stream, self.max_seconds, self.declared)
        finally:
            self.container.close()
        if self.declared is not None and decoded.duration < self.declared - 1.0:
            decoded.warnings.append(f"decoded {decoded.duration:.1f} s of the {self.declared:.1f} s the file "
                                    "declares; it may be truncated")
        return decoded

    def __enter__(self) -> AudioUpload:
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()


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
    with AudioUpload(data, max_seconds) as upload:
        return upload.decode()


class _PcmBuffer:
    """A growing int16 buffer: one allocation when the duration is known, amortised growth otherwise."""

    def __init__(self, expected_samples: int):
        self.data = np.empty(max(expected_samples, SAMPLE_RATE), np.int16)
        self.size = 0

    def append(self, piece: np.ndarray) -> None:
        if self.size + piece.size > self.data.size:
            grown = np.empty(max(self.size + piece.size, int(self.data.size * 1.5)), np.int16)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[self.size:self.size + piece.size] = piece
        self.size += piece.size

    def result(self) -> np.ndarray:
        # A view when the estimate was close; a compact copy when it overshot by a lot.
        view = self.data[:self.size]
        return view.copy() if self.data.size > self.size * 1.1 + SAMPLE_RATE else view


def _decode_stream(container, stream, max_seconds: float, declared: float | None = None) -> DecodedAudio:
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    max_samples = int(max_seconds * SAMPLE_RATE)
    expected = int(min(declared, max_seconds) * SAMPLE_RATE) + SAMPLE_RATE if declared else 30 * SAMPLE_RATE
    pcm = _PcmBuffer(expected)
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
                pcm.append(out.to_ndarray().reshape(-1))
        if pcm.size > max_samples:
            raise PayloadTooLarge(f"audio is longer than the limit of {max_seconds:.0f} s "
                                  "(MAX_AUDIO_SECONDS)", code="audio_too_long")
    for out in resampler.resample(None):  # flush
        pcm.append(out.to_ndarray().reshape(-1))
    if pcm.size == 0 and not warnings:
        raise InvalidInput("the file contains no decodable audio", code="invalid_audio")
    if pcm.size == 0:
        raise InvalidInput("the file is damaged: no audio could be decoded", code="invalid_audio")
    return DecodedAudio(pcm.result(), warnings)
