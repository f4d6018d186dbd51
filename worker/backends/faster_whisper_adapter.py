"""Every call into faster-whisper's internals, in one place (tests/worker/test_faster_whisper_adapter.py pins them).

faster-whisper's ``BatchedInferencePipeline`` decodes the chunks of *one* recording; this service
batches chunks of *many* requests, so it calls the pipeline's steps one by one. Several of them are
private or undocumented (``_split_segments_by_timestamps``, ``add_word_timestamps`` on a stand-in,
``generate_segment_batched``, ``get_prompt``, the VAD model's session): when faster-whisper is
upgraded, this file and its tests are what to check.
"""

from __future__ import annotations

from math import ceil

import numpy as np

from worker.languages import LANGUAGE_CODES  # noqa: F401 - the codes Whisper's tokenizer knows, re-exported
from worker.whisper_types import ChunkPlan

SAMPLE_RATE = 16000
BEST_OF = 5
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
# Silero VAD windows per ONNX call: 1,000 windows (32 s) keep the model's working memory to a
# few MB; faster-whisper uses 10,000 (~200 MB). The state is carried, so results are identical.
VAD_WINDOWS_PER_BLOCK = 1_000
VAD_WINDOW = 512
VAD_CONTEXT = 64


def speech_timestamps(pcm: np.ndarray, to_float, max_speech_s: float, min_silence_ms: int) -> list[dict]:
    """faster-whisper's ``get_speech_timestamps`` over int16 PCM, exactly, in bounded memory.

    Whole-file VAD converts an hour to float32 (230 MB), pads and re-stacks it (two more copies)
    and lets ONNX Runtime work on 10,000 windows at a time (~200 MB more). Here the Silero model
    runs over blocks of ``VAD_WINDOWS_PER_BLOCK`` windows with its state and context carried
    from block to block -- the same probabilities -- and faster-whisper's rules turn them into
    speech regions (``_regions``, copied from faster_whisper/vad.py 1.2.1, MIT).
    """
    from faster_whisper.vad import VadOptions

    options = VadOptions(max_speech_duration_s=max_speech_s, min_silence_duration_ms=min_silence_ms)
    return _regions(speech_probabilities(pcm, to_float), len(pcm), options)


def speech_probabilities(pcm: np.ndarray, to_float) -> np.ndarray:
    """Silero's speech probability per 512-sample window, as ``SileroVADModel.__call__`` computes it."""
    from faster_whisper.vad import get_vad_model

    session = get_vad_model().session
    windows_total = len(pcm) // VAD_WINDOW + 1  # get_speech_timestamps always pads, by up to a window
    h = np.zeros((1, 1, 128), dtype="float32")
    c = np.zeros((1, 1, 128), dtype="float32")
    tail = np.zeros((1, VAD_CONTEXT), dtype="float32")  # the first window's context is silence
    outputs = []
    for first in range(0, windows_total, VAD_WINDOWS_PER_BLOCK):
        count = min(VAD_WINDOWS_PER_BLOCK, windows_total - first)
        block = np.zeros(count * VAD_WINDOW, dtype="float32")
        piece = pcm[first * VAD_WINDOW:(first + count) * VAD_WINDOW]
        block[:len(piece)] = to_float(piece)
        windows = block.reshape(-1, VAD_WINDOW)
        context = np.concatenate([tail, windows[:-1, -VAD_CONTEXT:]], 0)
        tail = windows[-1:, -VAD_CONTEXT:].copy()
        output, h, c = session.run(None, {"input": np.concatenate([context, windows], 1), "h": h, "c": c})
        outputs.append(output)
    return np.concatenate(outputs, axis=0)


def _regions(speech_probs: np.ndarray, audio_length_samples: int, vad_options, sampling_rate: int = 16000,
             window_size_samples: int = VAD_WINDOW) -> list[dict]:
    """The body of faster-whisper's ``get_speech_timestamps`` after the model call (unchanged)."""
    threshold = vad_options.threshold
    neg_threshold = vad_options.neg_threshold
    min_speech_duration_ms = vad_options.min_speech_duration_ms
    max_speech_duration_s = vad_options.max_speech_duration_s
    min_silence_duration_ms = vad_options.min_silence_duration_ms
    speech_pad_ms = vad_options.speech_pad_ms
    min_speech_samples = sampling_rate * min_speech_duration_ms / 1000
    speech_pad_samples = sampling_rate * speech_pad_ms / 1000
    max_speech_samples = (
        sampling_rate * max_speech_duration_s
        - window_size_samples
        - 2 * speech_pad_samples
    )
    min_silence_samples = sampling_rate * min_silence_duration_ms / 1000
    min_silence_samples_at_max_speech = sampling_rate * 98 / 1000

    triggered = False
    speeches = []
    current_speech = {}
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)

    # to save potential segment end (and tolerate some silence)
    temp_end = 0
    # to save potential segment limits in case of maximum segment size reached
    prev_end = next_start = 0

    for i, speech_prob in enumerate(speech_probs):
        if (speech_prob >= threshold) and temp_end:
            temp_end = 0
            if next_start < prev_end:
                next_start = window_size_samples * i

        if (speech_prob >= threshold) and not triggered:
            triggered = True
            current_speech["start"] = window_size_samples * i
            continue

        if (
            triggered
            and (window_size_samples * i) - current_speech["start"] > max_speech_samples
        ):
            if prev_end:
                current_speech["end"] = prev_end
                speeches.append(current_speech)
                current_speech = {}
                # previously reached silence (< neg_thres) and is still not speech (< thres)
                if next_start < prev_end:
                    triggered = False
                else:
                    current_speech["start"] = next_start
                prev_end = next_start = temp_end = 0
            else:
                current_speech["end"] = window_size_samples * i
                speeches.append(current_speech)
                current_speech = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                continue

        if (speech_prob < neg_threshold) and triggered:
            if not temp_end:
                temp_end = window_size_samples * i
            # condition to avoid cutting in very short silence
            if (window_size_samples * i) - temp_end > min_silence_samples_at_max_speech:
                prev_end = temp_end
            if (window_size_samples * i) - temp_end < min_silence_samples:
                continue
            else:
                current_speech["end"] = temp_end
                if (
                    current_speech["end"] - current_speech["start"]
                ) > min_speech_samples:
                    speeches.append(current_speech)
                current_speech = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                continue

    if (
        current_speech
        and (audio_length_samples - current_speech["start"]) > min_speech_samples
    ):
        current_speech["end"] = audio_length_samples
        speeches.append(current_speech)

    for i, speech in enumerate(speeches):
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - speech_pad_samples))
        if i != len(speeches) - 1:
            silence_duration = speeches[i + 1]["start"] - speech["end"]
            if silence_duration < 2 * speech_pad_samples:
                speech["end"] += int(silence_duration // 2)
                speeches[i + 1]["start"] = int(
                    max(0, speeches[i + 1]["start"] - silence_duration // 2)
                )
            else:
                speech["end"] = int(
                    min(audio_length_samples, speech["end"] + speech_pad_samples)
                )
                speeches[i + 1]["start"] = int(
                    max(0, speeches[i + 1]["start"] - speech_pad_samples)
                )
        else:
            speech["end"] = int(
                min(audio_length_samples, speech["end"] + speech_pad_samples)
            )

    return speeches


def plan_chunks(speech: list[dict], max_duration_s: float) -> list[ChunkPlan]:
    """``collect_chunks``' grouping of speech regions into <= max_duration chunks, as sample ranges.

    collect_chunks copies every chunk's audio at once; the plan holds only where the samples are,
    and each chunk's audio is cut when its features are made.
    """
    plans: list[ChunkPlan] = []
    ranges: list[tuple[int, int]] = []
    current = total = 0
    for region in speech:
        length = region["end"] - region["start"]
        if current + length > max_duration_s * SAMPLE_RATE:
            plans.append(ChunkPlan(tuple(ranges), total / SAMPLE_RATE, current / SAMPLE_RATE))
            total += current
            ranges, current = [], 0
        ranges.append((region["start"], region["end"]))
        current += length
    plans.append(ChunkPlan(tuple(ranges), total / SAMPLE_RATE, current / SAMPLE_RATE))
    return [plan for plan in plans if plan.ranges]


def split_segments(model, tokenizer, tokens: list[int], time_offset: float, duration: float) -> list[dict]:
    """faster-whisper's split of decoded tokens at timestamp pairs, without losing the last words.

    ``_split_segments_by_timestamps`` leaves out a last segment that has no closing timestamp,
    because sequential Whisper decodes it again from the next window. A batched chunk has no
    next window, so that text would silently vanish; here it becomes a segment ending with the chunk.
    """
    segments, _, _ = model._split_segments_by_timestamps(
        tokenizer=tokenizer, tokens=tokens, time_offset=time_offset,
        segment_size=int(ceil(duration) * model.frames_per_second), segment_duration=duration, seek=0)
    rest = tokens[sum(len(segment["tokens"]) for segment in segments):]
    if any(token < tokenizer.eot for token in rest):
        stamps = [token for token in rest if token >= tokenizer.timestamp_begin]
        start = (time_offset + (stamps[0] - tokenizer.timestamp_begin) * model.time_precision if stamps
                 else segments[-1]["end"] if segments else time_offset)
        segments.append(dict(seek=0, start=start, end=max(start, time_offset + duration), tokens=rest))
    return segments


class _PrecomputedAlignments:
    """Stands in for WhisperModel inside ``add_word_timestamps``.

    That method needs ``find_alignment`` (which needs the encoder output, so it ran in the batch)
    and ``frames_per_second``; everything else it does is per-request bookkeeping.
    """

    def __init__(self, alignments: list[list[dict]], frames_per_second: float):
        self._alignments = alignments
        self.frames_per_second = frames_per_second

    def find_alignment(self, *_args, **_kwargs) -> list[list[dict]]:
        return self._alignments


def add_word_timestamps(segmented: list[list[dict]], alignments: list[list[dict]], segment_sizes: list[int],
                        tokenizer, frames_per_second: float) -> None:
    """Fill each subsegment's "words" from alignments computed in the batch (in place).

    Per request, starting from 0.0: the same running state a solo transcription has.
    """
    from faster_whisper.transcribe import WhisperModel

    stand_in = _PrecomputedAlignments(alignments, frames_per_second)
    WhisperModel.add_word_timestamps(stand_in, segmented, tokenizer, None, segment_sizes,
                                     PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS, 0.0)


def decoding_options(model, multilingual: bool, *, language: str, task: str, beam_size: int, temperature: float,
                     initial_prompt: str | None, word_timestamps: bool, thresholds: tuple[float, float, float]):
    """Tokenizer and TranscriptionOptions for one decoding configuration, built as BatchedInferencePipeline does.

    One difference: timestamps stay on (the pipeline turns them off), so a chunk splits into
    sentence-level segments -- subtitles with one 30 s cue per chunk would be useless.
    """
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

    log_prob, no_speech, compression = thresholds
    tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task=task, language=language)
    options = TranscriptionOptions(
        beam_size=beam_size, best_of=BEST_OF, patience=1, length_penalty=1, repetition_penalty=1,
        no_repeat_ngram_size=0, log_prob_threshold=log_prob, no_speech_threshold=no_speech,
        compression_ratio_threshold=compression, condition_on_previous_text=False,
        prompt_reset_on_temperature=0.5, temperatures=[temperature], initial_prompt=initial_prompt,
        prefix=None, suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        without_timestamps=False, max_initial_timestamp=1.0, word_timestamps=word_timestamps,
        prepend_punctuations=PREPEND_PUNCTUATIONS, append_punctuations=APPEND_PUNCTUATIONS,
        multilingual=False, max_new_tokens=None, clip_timestamps=[],
        hallucination_silence_threshold=None, hotwords=None)
    return tokenizer, options


def pad_or_trim(features: np.ndarray) -> np.ndarray:
    """Log-mel features padded or cut to Whisper's 30 s window."""
    from faster_whisper.audio import pad_or_trim as pad

    return pad(features)


def generate(pipeline, features: np.ndarray, tokenizer, options, temperature: float):
    """(encoder output, [{tokens, avg_logprob, no_speech_prob}]) for stacked 30 s windows."""
    if temperature == 0:
        return pipeline.generate_segment_batched(features, tokenizer, options)
    return _sample(pipeline.model, features, tokenizer, options, temperature)


def _sample(model, features, tokenizer, options, temperature: float):
    """generate_segment_batched, but sampling: beam search would ignore the temperature."""
    prompt = model.get_prompt(
        tokenizer, previous_tokens=tokenizer.encode(options.initial_prompt) if options.initial_prompt else [],
        without_timestamps=options.without_timestamps)
    encoder_output = model.encode(features)
    results = model.model.generate(
        encoder_output, [list(prompt) for _ in range(features.shape[0])], beam_size=1,
        num_hypotheses=options.best_of, sampling_topk=0, sampling_temperature=temperature,
        max_length=model.max_length, suppress_blank=options.suppress_blank,
        suppress_tokens=options.suppress_tokens, return_scores=True, return_no_speech_prob=True)
    outputs = []
    for result in results:
        tokens = result.sequences_ids[0]
        outputs.append(dict(avg_logprob=result.scores[0] * len(tokens) / (len(tokens) + 1),
                            no_speech_prob=result.no_speech_prob, tokens=tokens))
    return encoder_output, outputs


def find_alignment(model, tokenizer, text_tokens: list[list[int]], encoder_output, segment_sizes: list[int]):
    """Word alignments of each window's text (needs the encoder output: runs in the batch)."""
    return model.find_alignment(tokenizer, text_tokens, encoder_output, segment_sizes)


def detect_language(model, features: list[np.ndarray]) -> list[tuple[str, float]]:
    """Batched language identification: (code, probability) of each window."""
    encoder_output = model.encode(np.stack([pad_or_trim(f) for f in features]))
    detected = []
    for candidates in model.model.detect_language(encoder_output):
        token, probability = candidates[0]
        detected.append((token[2:-2], float(probability)))
    return detected


def compression_ratio(text: str) -> float:
    """Whisper's gzip compression ratio of a text (repetition detector)."""
    from faster_whisper.transcribe import get_compression_ratio

    return get_compression_ratio(text)


def restore_timeline(segments: list[dict], speech: list[dict] | None) -> list[dict]:
    """Segment (and word) times on the VAD-joined timeline -> times in the original recording.

    Takes and returns plain dicts: start, end, words (list of dicts with start/end) or None.
    """
    if not speech:
        return segments
    from faster_whisper.transcribe import Segment, Word, restore_speech_timestamps

    fw = [Segment(id=n, seek=0, start=s["start"], end=s["end"], text="", tokens=[], avg_logprob=0.0,
                  no_speech_prob=0.0, compression_ratio=0.0, temperature=0.0,
                  words=None if s.get("words") is None else [Word(**w) for w in s["words"]])
          for n, s in enumerate(segments)]
    restored = []
    for segment, moved in zip(segments, restore_speech_timestamps(fw, speech, SAMPLE_RATE)):
        restored.append(dict(segment, start=moved.start, end=moved.end,
                             words=None if moved.words is None else [
                                 dict(w, start=m.start, end=m.end) for w, m in zip(segment["words"], moved.words)]))
    return restored
