"""Pins the faster-whisper internals worker/backends/faster_whisper_adapter.py relies on (check these on upgrade)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from faster_whisper.transcribe import BatchedInferencePipeline, Segment, WhisperModel, Word, restore_speech_timestamps
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

from worker.audio import decode_audio, to_float
from worker.backends import faster_whisper_adapter as fw

pytestmark = pytest.mark.unit


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_private_signatures_the_adapter_calls_are_unchanged():
    assert parameters(WhisperModel._split_segments_by_timestamps) == [
        "self", "tokenizer", "tokens", "time_offset", "segment_size", "segment_duration", "seek"]
    # add_word_timestamps is called on a stand-in with precomputed alignments, positionally.
    assert parameters(WhisperModel.add_word_timestamps) == [
        "self", "segments", "tokenizer", "encoder_output", "num_frames", "prepend_punctuations",
        "append_punctuations", "last_speech_timestamp"]
    assert "self.find_alignment(" in inspect.getsource(WhisperModel.add_word_timestamps)
    assert parameters(BatchedInferencePipeline.generate_segment_batched) == ["self", "features", "tokenizer",
                                                                           "options"]
    assert parameters(WhisperModel.get_prompt)[:4] == ["self", "tokenizer", "previous_tokens", "without_timestamps"]
    assert parameters(WhisperModel.find_alignment)[:5] == ["self", "tokenizer", "text_tokens", "encoder_output",
                                                         "num_frames"]


def test_chunk_plans_cut_exactly_the_audio_collect_chunks_copies():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(16000 * 200).astype(np.float32)
    starts = np.sort(rng.choice(16000 * 195, 40, replace=False))
    speech = [{"start": int(s), "end": int(s) + int(rng.integers(8000, 16000 * 9))} for s in starts]
    speech = [s for n, s in enumerate(speech) if n == 0 or s["start"] >= speech[n - 1]["end"]]
    pieces, metadata = collect_chunks(audio, speech, max_duration=30)
    plans = fw.plan_chunks(speech, 30)
    assert len(plans) == len(pieces)
    for plan, piece, meta in zip(plans, pieces, metadata):
        joined = np.concatenate([audio[start:end] for start, end in plan.ranges])
        assert np.array_equal(joined, piece)
        assert (plan.offset, plan.duration) == (meta["offset"], meta["duration"])


def test_vad_over_int16_blocks_finds_what_faster_whisper_finds(speech):
    pcm = decode_audio(speech.long.read_bytes(), max_seconds=600).samples
    options = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
    theirs = get_speech_timestamps(to_float(pcm), options)
    assert fw.speech_timestamps(pcm, to_float, max_speech_s=30, min_silence_ms=160) == theirs


def test_vad_in_small_blocks_carries_the_model_state_and_finds_exactly_the_same(speech, monkeypatch):
    pcm = decode_audio(speech.long.read_bytes(), max_seconds=600).samples
    whole = get_speech_timestamps(to_float(pcm), VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160))
    monkeypatch.setattr(fw, "VAD_WINDOWS_PER_BLOCK", 37)  # ~1.2 s blocks, edges everywhere
    assert fw.speech_timestamps(pcm, to_float, max_speech_s=30, min_silence_ms=160) == whole


def test_restore_timeline_matches_restore_speech_timestamps():
    speech = [{"start": 16000, "end": 48000}, {"start": 96000, "end": 160000}]
    segments = [{"start": 0.5, "end": 1.5, "words": None}, {"start": 2.2, "end": 5.0, "words": None},
                {"start": 2.0, "end": 3.0, "words": [{"start": 2.0, "end": 2.4, "word": " a", "probability": 0.9},
                                                     {"start": 2.5, "end": 3.0, "word": " b", "probability": 0.8}]}]
    ours = fw.restore_timeline([dict(s) for s in segments], speech)
    theirs = list(restore_speech_timestamps(
        [Segment(id=n, seek=0, start=s["start"], end=s["end"], text="", tokens=[], avg_logprob=0, no_speech_prob=0,
                 compression_ratio=0, temperature=0,
                 words=None if s["words"] is None else [Word(**w) for w in s["words"]])
         for n, s in enumerate(segments)], speech, 16000))
    assert [(s["start"], s["end"]) for s in ours] == [(s.start, s.end) for s in theirs]
    assert [(w["start"], w["end"]) for w in ours[2]["words"]] == [(w.start, w.end) for w in theirs[2].words]


@pytest.mark.unit
def test_an_unfinished_last_segment_is_kept_not_dropped():
    from types import SimpleNamespace

    import tokenizers
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import WhisperModel

    from worker.backends.faster_whisper_adapter import split_segments
    from worker.models import embedded_model_dir

    tokenizer = Tokenizer(tokenizers.Tokenizer.from_file(str(embedded_model_dir() / "tokenizer.json")), False,
                          task="transcribe", language="en")
    model = SimpleNamespace(time_precision=0.02, input_stride=2, frames_per_second=100)
    model._split_segments_by_timestamps = lambda **kw: WhisperModel._split_segments_by_timestamps(model, **kw)

    def stamp(seconds):
        return tokenizer.timestamp_begin + int(round(seconds / 0.02))

    first, second = tokenizer.encode(" Hello there."), tokenizer.encode(" And the last words")
    tokens = [stamp(0.0), *first, stamp(2.0), stamp(2.4), *second]  # no closing timestamp
    faster_whisper_alone, _, _ = model._split_segments_by_timestamps(
        tokenizer=tokenizer, tokens=tokens, time_offset=10.0, segment_size=500, segment_duration=5.0, seek=0)
    assert len(faster_whisper_alone) == 1  # the last words would be lost
    segments = split_segments(model, tokenizer, tokens, 10.0, 5.0)
    assert [tokenizer.decode(s["tokens"]) for s in segments] == [" Hello there.", " And the last words"]
    assert (segments[1]["start"], segments[1]["end"]) == (12.4, 15.0)


def test_the_language_codes_are_the_tokenizers():
    """worker/languages.py copies them (options must not import faster-whisper): an upgrade fails here."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert fw.LANGUAGE_CODES == tuple(_LANGUAGE_CODES)
    assert {"en", "de", "ja", "yue"} <= set(fw.LANGUAGE_CODES) and len(fw.LANGUAGE_CODES) >= 99
