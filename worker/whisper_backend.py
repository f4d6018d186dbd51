"""faster-whisper backend whose batches are 30 s chunks from any number of requests.

faster-whisper's ``BatchedInferencePipeline`` cuts one recording into VAD chunks of at most 30 s
and decodes them in batches. Here its steps are split by thread so that chunks from *different*
concurrent requests share one model call:

- request threads (``preprocess``): decode -> Silero VAD -> ``collect_chunks`` -> log-mel features,
  with the pipeline's own VAD settings;
- the batcher thread (``forward``): ``BatchedInferencePipeline.generate_segment_batched`` on the
  stacked chunks (the pipeline's exact model call), segment splitting, and word alignment when
  asked for -- everything that needs the encoder output;
- request threads again (``postprocess``): word timing heuristics per request (with that
  request's own running state, so results equal a solo run), Whisper's no-speech rule and
  ``restore_speech_timestamps`` back to the original timeline.

A batch holds only chunks with the same ``DecodeKey`` (language, task, beam, temperature, prompt,
word timestamps), because one call shares one tokenizer and one set of decoding options.
Temperature fallback re-queues only the chunks that failed, at the next temperature -- the
pipeline itself uses just the first temperature.
"""

from __future__ import annotations

import functools
import itertools
import os
from dataclasses import dataclass
from math import ceil
from pathlib import Path

import numpy as np

from core.errors import ModelNotBaked
from worker.audio import SAMPLE_RATE, DecodedAudio
from worker.formats import Segment, Word
from worker.models import resolve_model_dir
from worker.packing import assign_segments, pack_features, plan_windows
from worker.settings import WorkerSettings

CHUNK_SECONDS = 30  # Whisper's window
# Whisper's defaults (openai/whisper transcribe(); faster-whisper keeps them).
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
BEST_OF = 5
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
# Batch size when MAX_BATCH_SIZE is auto: 16 chunks keep an L4 busy with large-v3 in fp16 and
# fit its 24 GB; on a CPU, 8 is where faster-whisper's own benchmark stops gaining.
GPU_BATCH_SIZE = 16
CPU_BATCH_SIZE = 8
DETECT = "detect-language"  # batch kind for language detection


@dataclass(frozen=True)
class DecodeKey:
    """Everything that must be equal for chunks to share one model call."""

    language: str
    task: str
    beam_size: int
    temperature: float
    initial_prompt: str | None
    word_timestamps: bool


@dataclass
class Chunk:
    """One <= 30 s piece of a request: features plus where it sits in the (VAD) timeline."""

    features: np.ndarray  # (n_mels, frames) float32, unpadded: padding happens per window
    offset: float
    duration: float
    request: int = 0  # which request it belongs to (packing keeps a request's chunks apart)


@dataclass
class PreparedAudio:
    """A request's audio after VAD and feature extraction (request thread)."""

    chunks: list[Chunk]
    duration: float
    speech_timestamps: list[dict] | None  # VAD regions (samples) to map times back; None = no VAD


@dataclass
class ChunkResult:
    """What the model thread returns for one chunk."""

    subsegments: list[dict]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    segment_size: int
    alignment: list[dict] | None = None

    @property
    def needs_fallback(self) -> bool:
        """Whisper's rule: repetitive or unlikely text is decoded again, hotter -- unless silent."""
        failed = (self.compression_ratio > COMPRESSION_RATIO_THRESHOLD
                  or self.avg_logprob < LOG_PROB_THRESHOLD)
        silent = self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob < LOG_PROB_THRESHOLD
        return failed and not silent

    @property
    def is_silence(self) -> bool:
        """Whisper's no-speech rule: likely silence and no confident text."""
        return self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob < LOG_PROB_THRESHOLD


def best_attempt(attempts: list[ChunkResult]) -> ChunkResult:
    """The last attempt if it passed; else, like faster-whisper, the most likely non-repetitive one."""
    if not attempts[-1].needs_fallback:
        return attempts[-1]
    below = [a for a in attempts if a.compression_ratio <= COMPRESSION_RATIO_THRESHOLD]
    return max(below or attempts, key=lambda a: a.avg_logprob)


def cpu_threads(setting: int) -> int:
    """WHISPER_CPU_THREADS, where 0 means one per core this process may use.

    CTranslate2's own default is 4 threads whatever the machine, which oversubscribes small
    instances (measured on 2 cores: 4 threads ran 15% slower than 2).
    """
    return setting or len(os.sched_getaffinity(0))


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


class WhisperBackend:
    """Loads a CTranslate2 Whisper model and serves batched chunk decoding."""

    def __init__(self, settings: WorkerSettings):
        self.settings = settings
        self.name = settings.whisper_model
        self.device = "cpu"
        self.compute_type = "int8"
        self.model = None
        self.model_dir: Path | None = None
        self._request_ids = itertools.count(1)  # next() is atomic under the GIL
        # Model-thread counters, shown by /health: how much packing saved and how often it backed off.
        self.packing_stats = {"enabled": settings.pack_short_audio, "windows": 0, "chunks": 0, "unpacked_retries": 0}

    # ---- start-up (batcher thread) ---------------------------------------------------------
    def check_weights(self) -> None:
        """Raise ModelNotBaked before any loading if the model is not on disk."""
        self.model_dir = resolve_model_dir(self.settings)

    def load(self) -> None:
        import ctranslate2
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.model_dir = resolve_model_dir(self.settings)
        requested = self.settings.whisper_device
        has_cuda = ctranslate2.get_cuda_device_count() > 0
        if requested == "cuda" and not has_cuda:
            raise ModelNotBaked("WHISPER_DEVICE=cuda but no CUDA device is visible")
        self.device = "cuda" if requested == "cuda" or (requested == "auto" and has_cuda) else "cpu"
        compute = self.settings.whisper_compute_type
        self.compute_type = ("float16" if self.device == "cuda" else "int8") if compute == "auto" else compute
        self.model = WhisperModel(str(self.model_dir), device=self.device, compute_type=self.compute_type,
                                  cpu_threads=cpu_threads(self.settings.whisper_cpu_threads), local_files_only=True)
        self.pipeline = BatchedInferencePipeline(self.model)
        self.multilingual = bool(self.model.model.is_multilingual)
        self.frames_per_second = self.model.frames_per_second

    def default_batch_size(self) -> int:
        return GPU_BATCH_SIZE if self.device == "cuda" else CPU_BATCH_SIZE

    def warmup_batches(self, batch_size: int) -> list[tuple[DecodeKey, list[Chunk]]]:
        silence = self.preprocess(DETECT, (DecodedAudio(np.zeros(SAMPLE_RATE * 2, np.float32)), False))
        key = DecodeKey("en", "transcribe", self.settings.default_beam_size, 0.0, None, False)
        return [(key, silence.chunks * batch_size)]

    def describe(self) -> dict:
        return {"model": self.name, "model_dir": str(self.model_dir), "device": self.device,
                "compute_type": self.compute_type, "multilingual": self.multilingual,
                "packing": dict(self.packing_stats)}

    # ---- request threads -------------------------------------------------------------------
    def preprocess(self, kind, raw: tuple[DecodedAudio, bool]) -> PreparedAudio:
        """(decoded audio, vad_filter) -> 30 s chunks with log-mel features, as the pipeline cuts them."""
        from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

        decoded, vad_filter = raw
        audio = decoded.samples
        if vad_filter:
            # BatchedInferencePipeline.transcribe's own VAD settings.
            speech = get_speech_timestamps(audio, VadOptions(max_speech_duration_s=CHUNK_SECONDS,
                                                             min_silence_duration_ms=160))
            if not speech:
                return PreparedAudio([], decoded.duration, speech)
            pieces, metadata = collect_chunks(audio, speech, max_duration=CHUNK_SECONDS)
            spans = [(m["offset"], m["duration"]) for m in metadata]
        else:
            # Without VAD the pipeline refuses audio over 30 s; cut fixed windows instead.
            speech = None
            window = CHUNK_SECONDS * SAMPLE_RATE
            pieces = [audio[start:start + window] for start in range(0, len(audio), window)]
            spans = [(start / SAMPLE_RATE, len(piece) / SAMPLE_RATE)
                     for start, piece in zip(range(0, len(audio), window), pieces)]
        extractor = self.model.feature_extractor
        request = next(self._request_ids)
        chunks = [Chunk(extractor(piece)[..., :-1], offset, duration, request)
                  for piece, (offset, duration) in zip(pieces, spans) if len(piece)]
        return PreparedAudio(chunks, decoded.duration, speech)

    def postprocess(self, key: DecodeKey, output: tuple[PreparedAudio, list[ChunkResult]]) -> list[Segment]:
        """One request's chunk results -> its segments on the original timeline."""
        from faster_whisper.transcribe import Segment as FWSegment
        from faster_whisper.transcribe import WhisperModel, restore_speech_timestamps
        from faster_whisper.transcribe import Word as FWWord

        prepared, results = output
        kept = [r for r in results if r.subsegments and not r.is_silence]
        segmented = [[dict(sub, avg_logprob=r.avg_logprob, no_speech_prob=r.no_speech_prob,
                           compression_ratio=r.compression_ratio) for sub in r.subsegments] for r in kept]
        if key.word_timestamps and kept:
            tokenizer, _ = self._decoding(key)
            stand_in = _PrecomputedAlignments([r.alignment for r in kept], self.frames_per_second)
            # Per request, starting from 0.0: the same running state a solo transcription has.
            WhisperModel.add_word_timestamps(stand_in, segmented, tokenizer, None,
                                             [r.segment_size for r in kept], PREPEND_PUNCTUATIONS,
                                             APPEND_PUNCTUATIONS, 0.0)
        fw_segments = []
        for result, chunk_segments in zip(kept, segmented):
            for sub in chunk_segments:
                words = [FWWord(**w) for w in sub["words"]] if key.word_timestamps else None
                fw_segments.append(FWSegment(
                    id=len(fw_segments) + 1, seek=sub["seek"], start=round(sub["start"], 3),
                    end=round(sub["end"], 3), text=sub["text"], tokens=sub["tokens"],
                    avg_logprob=sub["avg_logprob"], no_speech_prob=sub["no_speech_prob"],
                    compression_ratio=sub["compression_ratio"], words=words, temperature=result.temperature))
        if prepared.speech_timestamps:
            fw_segments = list(restore_speech_timestamps(fw_segments, prepared.speech_timestamps, SAMPLE_RATE))
        def clamp(seconds: float) -> float:
            # Whisper's timestamps are 20 ms tokens and can point past the last sample.
            return round(min(max(seconds, 0.0), prepared.duration), 3)

        return [Segment(id=s.id, start=clamp(s.start), end=clamp(s.end), text=s.text,
                        avg_logprob=s.avg_logprob, no_speech_prob=s.no_speech_prob,
                        compression_ratio=s.compression_ratio, temperature=s.temperature,
                        words=None if s.words is None else [
                            Word(start=clamp(w.start), end=clamp(w.end), word=w.word,
                                 probability=float(w.probability)) for w in s.words])
                for s in fw_segments]

    # ---- batcher thread --------------------------------------------------------------------
    def forward(self, key, batch: list) -> list:
        """A batch of chunks (or detection features) from any requests -> one result each."""
        if key == DETECT:
            return self._detect_language(batch)
        return self._decode(key, batch)

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one backend per process; keys are few
    def _decoding(self, key: DecodeKey):
        """Tokenizer and TranscriptionOptions for a key, built as BatchedInferencePipeline does.

        One difference: timestamps stay on (the pipeline turns them off), so a chunk splits into
        sentence-level segments -- subtitles with one 30 s cue per chunk would be useless.
        """
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task=key.task, language=key.language)
        options = TranscriptionOptions(
            beam_size=key.beam_size, best_of=BEST_OF, patience=1, length_penalty=1, repetition_penalty=1,
            no_repeat_ngram_size=0, log_prob_threshold=LOG_PROB_THRESHOLD,
            no_speech_threshold=NO_SPEECH_THRESHOLD, compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
            condition_on_previous_text=False, prompt_reset_on_temperature=0.5,
            temperatures=[key.temperature], initial_prompt=key.initial_prompt, prefix=None,
            suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            without_timestamps=False, max_initial_timestamp=1.0, word_timestamps=key.word_timestamps,
            prepend_punctuations=PREPEND_PUNCTUATIONS, append_punctuations=APPEND_PUNCTUATIONS,
            multilingual=False, max_new_tokens=None, clip_timestamps=[],
            hallucination_silence_threshold=None, hotwords=None)
        return tokenizer, options

    def _decode(self, key: DecodeKey, batch: list[Chunk]) -> list[ChunkResult]:
        pack = self.settings.pack_short_audio and not key.word_timestamps and len(batch) > 1
        windows = (plan_windows([c.duration for c in batch], [c.request for c in batch]) if pack
                   else [[i] for i in range(len(batch))])
        results: list[ChunkResult | None] = [None] * len(batch)
        unpack = self._decode_windows(key, batch, windows, results)
        if unpack:  # a segment crossed between two requests: decode those chunks alone instead
            self.packing_stats["unpacked_retries"] += len(unpack)
            self._decode_windows(key, batch, [[i] for i in unpack], results)
        return results

    def _decode_windows(self, key: DecodeKey, batch: list[Chunk], windows: list[list[int]],
                        results: list) -> list[int]:
        """Decode windows (one chunk, or several packed) in one model call; fills ``results``.

        Returns the chunk indices of packed windows whose segments could not be split cleanly.
        """
        from faster_whisper.audio import pad_or_trim

        tokenizer, options = self._decoding(key)
        stacked, spans = [], []
        for window in windows:
            if len(window) == 1:
                stacked.append(pad_or_trim(batch[window[0]].features))
                spans.append(None)
            else:
                features, member_spans = pack_features([batch[i].features for i in window])
                stacked.append(pad_or_trim(features))
                spans.append(member_spans)
        features = np.stack(stacked)
        if key.temperature == 0:
            encoder_output, outputs = self.pipeline.generate_segment_batched(features, tokenizer, options)
        else:
            encoder_output, outputs = self._sample(features, tokenizer, options, key.temperature)
        self.packing_stats["windows"] += len(windows)
        self.packing_stats["chunks"] += sum(len(w) for w in windows)
        unpack: list[int] = []
        for window, member_spans, output in zip(windows, spans, outputs):
            if member_spans is None:
                results[window[0]] = self._chunk_result(key, tokenizer, batch[window[0]], output, output["tokens"])
                continue
            subsegments = split_segments(self.model, tokenizer, output["tokens"], 0.0, member_spans[-1][1])
            members = assign_segments(subsegments, member_spans)
            if members is None:
                unpack.extend(window)
                continue
            for index, (start, _end), own in zip(window, member_spans, members):
                results[index] = self._chunk_result(key, tokenizer, batch[index], output,
                                                    [t for sub in own for t in sub["tokens"]], own, start)
        if key.word_timestamps:  # never packed: every window is one chunk
            text_tokens = [[t for sub in r.subsegments for t in sub["tokens"] if t < tokenizer.eot]
                           for r in results]
            alignments = self.model.find_alignment(tokenizer, text_tokens, encoder_output,
                                                   [r.segment_size for r in results])
            for result, alignment in zip(results, alignments):
                result.alignment = alignment
        return unpack

    def _chunk_result(self, key: DecodeKey, tokenizer, chunk: Chunk, output: dict, tokens: list[int],
                      packed_segments: list[dict] | None = None, packed_start: float = 0.0) -> ChunkResult:
        """One chunk's segments on its request's (VAD) timeline, from its own or a shared window."""
        from faster_whisper.transcribe import get_compression_ratio

        segment_size = int(ceil(chunk.duration) * self.frames_per_second)
        if packed_segments is None:
            subsegments = split_segments(self.model, tokenizer, tokens, chunk.offset, chunk.duration)
        else:
            # Window time -> this chunk's time, kept inside the chunk (a segment may have run into
            # the silence around it).
            shift, chunk_end = chunk.offset - packed_start, chunk.offset + chunk.duration
            subsegments = []
            for sub in packed_segments:
                end = min(chunk_end, max(chunk.offset, sub["end"] + shift))
                subsegments.append(dict(sub, start=min(end, max(chunk.offset, sub["start"] + shift)), end=end))
        seek = int(chunk.offset * self.frames_per_second)
        for sub in subsegments:
            sub["text"] = tokenizer.decode(sub["tokens"])
            sub["seek"] = seek
        return ChunkResult(subsegments=subsegments, avg_logprob=output["avg_logprob"],
                           no_speech_prob=output["no_speech_prob"],
                           compression_ratio=get_compression_ratio(tokenizer.decode(tokens)),
                           temperature=key.temperature, segment_size=segment_size)

    def _sample(self, features, tokenizer, options, temperature: float):
        """generate_segment_batched, but sampling: beam search would ignore the temperature."""
        prompt = self.model.get_prompt(
            tokenizer, previous_tokens=tokenizer.encode(options.initial_prompt) if options.initial_prompt else [],
            without_timestamps=options.without_timestamps)
        encoder_output = self.model.encode(features)
        results = self.model.model.generate(
            encoder_output, [list(prompt) for _ in range(features.shape[0])], beam_size=1,
            num_hypotheses=options.best_of, sampling_topk=0, sampling_temperature=temperature,
            max_length=self.model.max_length, suppress_blank=options.suppress_blank,
            suppress_tokens=options.suppress_tokens, return_scores=True, return_no_speech_prob=True)
        outputs = []
        for result in results:
            tokens = result.sequences_ids[0]
            outputs.append(dict(avg_logprob=result.scores[0] * len(tokens) / (len(tokens) + 1),
                                no_speech_prob=result.no_speech_prob, tokens=tokens))
        return encoder_output, outputs

    def _detect_language(self, batch: list[np.ndarray]) -> list[tuple[str, float]]:
        """Batched language identification on each request's first 30 s of speech."""
        from faster_whisper.audio import pad_or_trim

        encoder_output = self.model.encode(np.stack([pad_or_trim(features) for features in batch]))
        detected = []
        for candidates in self.model.model.detect_language(encoder_output):
            token, probability = candidates[0]
            detected.append((token[2:-2], float(probability)))
        return detected

