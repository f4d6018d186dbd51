"""Audio decoding limits: the duration check reads metadata first and still holds without it."""

from __future__ import annotations

import numpy as np
import pytest

import worker.audio as audio
from core.errors import PayloadTooLarge

pytestmark = pytest.mark.unit


def test_declared_duration_over_the_limit_is_refused_without_decoding(speech, monkeypatch):
    def must_not_decode(*_args):
        raise AssertionError("decoded although the container said it was too long")

    monkeypatch.setattr(audio, "_decode_stream", must_not_decode)
    with pytest.raises(PayloadTooLarge) as refused:
        audio.decode_audio(speech.over_limit.read_bytes(), max_seconds=600)
    assert refused.value.code == "audio_too_long" and "660 s" in refused.value.message


def test_without_metadata_decoding_stops_once_past_the_limit(speech, monkeypatch):
    monkeypatch.setattr(audio, "_declared_seconds", lambda *_args: None)
    with pytest.raises(PayloadTooLarge):
        audio.decode_audio(speech.over_limit.read_bytes(), max_seconds=30)


def test_resampled_to_16k_mono_int16_as_faster_whisper_decodes_it(speech):
    from faster_whisper.audio import decode_audio as faster_whisper_decode

    decoded = audio.decode_audio(speech.stereo_44k.read_bytes(), max_seconds=600)
    assert decoded.samples.ndim == 1 and decoded.samples.dtype.name == "int16"  # 2 bytes a sample, not 4
    assert 3 < decoded.duration < 8 and not decoded.warnings
    theirs = faster_whisper_decode(str(speech.stereo_44k))
    assert np.allclose(decoded.to_float()[:len(theirs)], theirs[:len(decoded.samples)], atol=2e-4)


def test_decoded_size_is_estimated_from_the_header_before_decoding(speech, monkeypatch):
    def must_not_decode(*_args):
        raise AssertionError("the estimate decoded the audio")

    monkeypatch.setattr(audio, "_decode_stream", must_not_decode)
    eleven_minutes = speech.over_limit.read_bytes()  # 660 s of Opus in a few KB
    with audio.AudioUpload(eleven_minutes, max_seconds=700) as upload:
        assert upload.decoded_bytes == pytest.approx(660 * 16000 * 2, rel=0.001)
    monkeypatch.setattr(audio, "_declared_seconds", lambda *_args: None)
    with audio.AudioUpload(eleven_minutes, max_seconds=600) as upload:  # no duration: charged the limit
        assert upload.decoded_bytes == 600 * 16000 * 2


def test_the_upload_is_opened_once_for_the_estimate_and_the_decode(speech, monkeypatch):
    # Probing a container decodes its first packets: a second open per request cost the worker
    # 6% of its throughput on short clips (issue 7's regression check).
    opened = []
    real_open = audio.av.open
    monkeypatch.setattr(audio.av, "open", lambda *args, **kwargs: opened.append(1) or real_open(*args, **kwargs))
    with audio.AudioUpload(speech.stereo_44k.read_bytes(), max_seconds=600) as upload:
        assert upload.decoded_bytes > 0
        assert upload.decode().duration > 3
    assert len(opened) == 1


def test_long_audio_decodes_into_one_compact_buffer(tmp_path):
    import subprocess
    import tracemalloc

    from tests.media import require

    path = tmp_path / "five-minutes.flac"
    subprocess.run([require("ffmpeg"), "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=44100:duration=300", str(path)], check=True)
    data = path.read_bytes()
    pcm_bytes = 300 * 16000 * 2
    tracemalloc.start()
    try:
        decoded = audio.decode_audio(data, max_seconds=600)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.samples.nbytes == pytest.approx(pcm_bytes, rel=0.01)
    # float32 pieces joined by concatenate (the old way) peaked at 4x the int16 PCM
    assert peak < 1.5 * pcm_bytes, f"peak {peak / 2**20:.1f} MiB for {pcm_bytes / 2**20:.1f} MiB of PCM"
