"""Audio decoding limits: the duration check reads metadata first and still holds without it."""

from __future__ import annotations

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


def test_resampled_to_16k_mono(speech):
    decoded = audio.decode_audio(speech.stereo_44k.read_bytes(), max_seconds=600)
    assert decoded.samples.ndim == 1 and decoded.samples.dtype.name == "float32"
    assert 3 < decoded.duration < 8 and not decoded.warnings


def test_truncated_mp3_decodes_what_is_there_and_says_so(speech):
    whole = speech.containers["mp3"].read_bytes()
    decoded = audio.decode_audio(whole[: len(whole) * 2 // 3], max_seconds=600)
    assert 2 < decoded.duration < audio.decode_audio(whole, max_seconds=600).duration
    assert decoded.warnings and "truncated" in decoded.warnings[0]
