"""faster-whisper backend whose batches are 30 s chunks from any number of requests.

faster-whisper's ``BatchedInferencePipeline`` cuts one recording into VAD chunks of at most 30 s
and decodes them in batches. Here its steps are split by thread so that chunks from *different*
concurrent requests share one model call:

- request threads: ``prepare`` (Silero VAD -> where the <= 30 s chunks are, with the pipeline's
  own VAD settings) and ``preprocess`` (one chunk's log-mel features, made when the batcher has
  room for it);
- the batcher thread (``forward``): the pipeline's exact model call on the stacked chunks,
  segment splitting, and word alignment when asked for -- everything that needs the encoder output;
- request threads again (``assemble``): word timing per request (with that request's own running
  state, so results equal a solo run), Whisper's no-speech rule, and times mapped back to the
  original recording.

A batch holds only chunks with the same ``DecodeKey`` (language, task, beam, temperature, prompt,
word timestamps), because one call shares one tokenizer and one set of decoding options. The
temperature fallback is the transcriber's (worker/fallback.py); faster-whisper's internals are
called only through worker/backends/faster_whisper_adapter.py.
"""

from __future__ import annotations

import functools
import itertools
import json
from math import ceil
from pathlib import Path

import numpy as np

from core.errors import ModelNotBaked
from core.model.backend import BaseBackend
from core.model.cpus import available_cpus
from core.settings import SettingsError
from worker.audio import SAMPLE_RATE, DecodedAudio, to_float
from worker.backends import faster_whisper_adapter as fw
from worker.fallback import COMPRESSION_RATIO_THRESHOLD, LOG_PROB_THRESHOLD, NO_SPEECH_THRESHOLD, is_silence
from worker.formats import Segment, Word
from worker.models import resolve_model_dir
from worker.packing import assign_segments, pack_features, plan_windows
from worker.settings import WorkerSettings
from worker.whisper_types import CHUNK_SECONDS, DETECT, Chunk, ChunkPlan, ChunkResult, DecodeKey, PreparedAudio

# Batch size when MAX_BATCH_SIZE is auto: 16 chunks keep an L4 busy with large-v3 in fp16 and
# fit its 24 GB; on a CPU, 8 is where faster-whisper's own benchmark stops gaining.
GPU_BATCH_SIZE = 16
CPU_BATCH_SIZE = 8
FRAMES_PER_SECOND = 100  # log-mel frames (every Whisper model)
MULTILINGUAL_VOCABULARY = 51865  # CTranslate2's rule: English-only models have one token fewer


def cpu_threads(setting: int) -> int:
    """WHISPER_CPU_THREADS, where 0 means one per CPU this process may use (its affinity,
    capped by the container's CPU quota: Cloud Run limits a 4-vCPU instance by quota, not by
    affinity, on a host with many more cores).

    CTranslate2's own default is 4 threads whatever the machine, which oversubscribes small
    instances (measured on 2 cores: 4 threads ran 15% slower than 2).
    """
    return setting or available_cpus()


def is_multilingual(model_dir: Path | None, name: str) -> bool:
    """Whether a CTranslate2 Whisper model is multilingual, read from its vocabulary before loading."""
    if model_dir is not None:
        if (model_dir / "vocabulary.txt").is_file():
            with open(model_dir / "vocabulary.txt", encoding="utf-8") as vocabulary:
                return sum(1 for _ in vocabulary) >= MULTILINGUAL_VOCABULARY
        if (model_dir / "vocabulary.json").is_file():
            return len(json.loads((model_dir / "vocabulary.json").read_text())) >= MULTILINGUAL_VOCABULARY
    return not name.endswith(".en")


def fixed_windows(n_samples: int) -> list[ChunkPlan]:
    """30 s windows over the whole recording (no VAD: the pipeline refuses audio over 30 s)."""
    window = CHUNK_SECONDS * SAMPLE_RATE
    return [ChunkPlan(((start, min(start + window, n_samples)),), start / SAMPLE_RATE,
                      (min(start + window, n_samples) - start) / SAMPLE_RATE)
            for start in range(0, n_samples, window)]


def chunk_audio(prepared: PreparedAudio, plan: ChunkPlan) -> np.ndarray:
    """float32 samples of one chunk (its speech regions joined), cut from the int16 PCM."""
    return to_float(np.concatenate([prepared.samples[start:end] for start, end in plan.ranges]))


def clamp_segments(segments: list[dict], duration: float) -> list[Segment]:
    """Segment dicts -> Segments, times kept inside the recording (Whisper's 20 ms tokens can overshoot)."""
    def clamp(seconds: float) -> float:
        return round(min(max(seconds, 0.0), duration), 3)

    return [Segment(id=n, start=clamp(s["start"]), end=clamp(s["end"]), text=s["text"],
                    avg_logprob=s["avg_logprob"], no_speech_prob=s["no_speech_prob"],
                    compression_ratio=s["compression_ratio"], temperature=s["temperature"],
                    words=None if s.get("words") is None else [
                        Word(start=clamp(w["start"]), end=clamp(w["end"]), word=w["word"],
                             probability=float(w["probability"])) for w in s["words"]])
            for n, s in enumerate(segments, start=1)]


class WhisperBackend(BaseBackend):
    """Loads a CTranslate2 Whisper model and serves batched chunk decoding."""

    def __init__(self, settings: WorkerSettings):
        self.settings = settings
        self.name = settings.whisper_model
        self.device = "cpu"
        self.compute_type = "int8"
        self.model = None
        self.pipeline = None
        try:
            self.model_dir: Path | None = resolve_model_dir(settings)
        except ModelNotBaked:
            self.model_dir = None  # check_weights() says so, with the bake command
        # A fact requests are validated against: known before load() (the model is still loading).
        self.multilingual = is_multilingual(self.model_dir, self.name)
        self.frames_per_second = FRAMES_PER_SECOND
        self._request_ids = itertools.count(1)  # next() is atomic under the GIL
        # Model-thread counters, shown by /health: how much packing saved and how often it backed off.
        self.packing_stats = {"enabled": settings.pack_short_audio, "windows": 0, "chunks": 0, "unpacked_retries": 0}

    # ---- start-up (batcher thread) ---------------------------------------------------------
    def check_weights(self) -> None:
        """Raise before any loading if the model is not on disk or an explicit CUDA device is missing."""
        self.model_dir = resolve_model_dir(self.settings)
        if self.settings.whisper_device == "cuda":
            self._has_cuda()

    def _has_cuda(self) -> bool:
        """Whether CTranslate2 sees a CUDA device; WHISPER_DEVICE=cuda without one raises SettingsError."""
        import ctranslate2

        has_cuda = ctranslate2.get_cuda_device_count() > 0
        if self.settings.whisper_device == "cuda" and not has_cuda:
            # A SettingsError: the worker does not boot and gunicorn stops (exit 3) with this line,
            # instead of large-v3 loading on the CPU past the startup probe (issue 23).
            raise SettingsError("WHISPER_DEVICE=cuda but CTranslate2 sees no CUDA device in this container "
                                "(no GPU attached, or its driver failed to initialise)")
        return has_cuda

    def load(self) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.model_dir = resolve_model_dir(self.settings)
        requested = self.settings.whisper_device
        has_cuda = self._has_cuda()
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
        silence = self.prepare(DecodedAudio(np.zeros(SAMPLE_RATE * 2, np.int16)), vad_filter=False)
        chunk = self.preprocess(DETECT, (silence, silence.plans[0]))
        key = DecodeKey("en", "transcribe", self.settings.default_beam_size, 0.0, None, False)
        return [(key, [chunk] * batch_size)]

    def describe(self) -> dict:
        facts = {"model": self.name, "model_dir": str(self.model_dir), "device": self.device,
                 "compute_type": self.compute_type, "multilingual": self.multilingual}
        # Packing counters only mean something when packing is on; off, they would read as "no savings".
        facts["packing"] = dict(self.packing_stats) if self.settings.pack_short_audio else {"enabled": False}
        return facts

    # ---- request threads -------------------------------------------------------------------
    def prepare(self, decoded: DecodedAudio, vad_filter: bool) -> PreparedAudio:
        """Decoded audio -> where its <= 30 s chunks are (VAD as the pipeline runs it); no features yet."""
        pcm = decoded.samples
        request = next(self._request_ids)
        if not vad_filter:
            return PreparedAudio(pcm, fixed_windows(len(pcm)), decoded.duration, None, request)
        # BatchedInferencePipeline.transcribe's own VAD settings.
        speech = fw.speech_timestamps(pcm, to_float, max_speech_s=CHUNK_SECONDS, min_silence_ms=160)
        return PreparedAudio(pcm, fw.plan_chunks(speech, CHUNK_SECONDS) if speech else [], decoded.duration,
                             speech, request)

    def preprocess(self, kind, raw: tuple[PreparedAudio, ChunkPlan]) -> Chunk:
        """(prepared audio, one chunk's plan) -> its log-mel features (about 1 MB)."""
        prepared, plan = raw
        features = self.model.feature_extractor(chunk_audio(prepared, plan))[..., :-1]
        return Chunk(features, plan.offset, plan.duration, prepared.request)

    def postprocess(self, kind, output: ChunkResult) -> ChunkResult:
        """A chunk's result needs nothing more until its request has them all (see ``assemble``)."""
        return output

    def assemble(self, prepared: PreparedAudio, chosen: list[ChunkResult], key: DecodeKey) -> list[Segment]:
        """One request's chosen chunk results -> its segments on the original timeline."""
        kept = [r for r in chosen if r.subsegments and not is_silence(r)]
        segmented = [[dict(sub, avg_logprob=r.avg_logprob, no_speech_prob=r.no_speech_prob,
                           compression_ratio=r.compression_ratio, temperature=r.temperature, words=None)
                      for sub in r.subsegments] for r in kept]
        if key.word_timestamps and kept:
            tokenizer, _ = self._decoding(key)
            fw.add_word_timestamps(segmented, [r.alignment for r in kept], [r.segment_size for r in kept],
                                   tokenizer, self.frames_per_second)
        segments = [sub for chunk_segments in segmented for sub in chunk_segments]
        if not key.word_timestamps:
            for sub in segments:
                sub["words"] = None
        return clamp_segments(fw.restore_timeline(segments, prepared.speech_timestamps), prepared.duration)

    # ---- batcher thread --------------------------------------------------------------------
    def forward(self, key, batch: list[Chunk]) -> list:
        """A batch of chunks from any requests -> one result each (detection: (language, p))."""
        if key == DETECT:
            return fw.detect_language(self.model, [chunk.features for chunk in batch])
        return self._decode(key, batch)

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one backend per process; keys are few
    def _decoding(self, key: DecodeKey):
        return fw.decoding_options(
            self.model, self.multilingual, language=key.language, task=key.task, beam_size=key.beam_size,
            temperature=key.temperature, initial_prompt=key.initial_prompt, word_timestamps=key.word_timestamps,
            thresholds=(LOG_PROB_THRESHOLD, NO_SPEECH_THRESHOLD, COMPRESSION_RATIO_THRESHOLD))

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
        tokenizer, options = self._decoding(key)
        stacked, spans = [], []
        for window in windows:
            if len(window) == 1:
                stacked.append(fw.pad_or_trim(batch[window[0]].features))
                spans.append(None)
            else:
                features, member_spans = pack_features([batch[i].features for i in window])
                stacked.append(fw.pad_or_trim(features))
                spans.append(member_spans)
        encoder_output, outputs = fw.generate(self.pipeline, np.stack(stacked), tokenizer, options, key.temperature)
        self.packing_stats["windows"] += len(windows)
        self.packing_stats["chunks"] += sum(len(w) for w in windows)
        unpack: list[int] = []
        for window, member_spans, output in zip(windows, spans, outputs):
            if member_spans is None:
                results[window[0]] = self._chunk_result(key, tokenizer, batch[window[0]], output, output["tokens"])
                continue
            subsegments = fw.split_segments(self.model, tokenizer, output["tokens"], 0.0, member_spans[-1][1])
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
            alignments = fw.find_alignment(self.model, tokenizer, text_tokens, encoder_output,
                                           [r.segment_size for r in results])
            for result, alignment in zip(results, alignments):
                result.alignment = alignment
        return unpack

    def _chunk_result(self, key: DecodeKey, tokenizer, chunk: Chunk, output: dict, tokens: list[int],
                      packed_segments: list[dict] | None = None, packed_start: float = 0.0) -> ChunkResult:
        """One chunk's segments on its request's (VAD) timeline, from its own or a shared window."""
        segment_size = int(ceil(chunk.duration) * self.frames_per_second)
        if packed_segments is None:
            subsegments = fw.split_segments(self.model, tokenizer, tokens, chunk.offset, chunk.duration)
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
                           compression_ratio=fw.compression_ratio(tokenizer.decode(tokens)),
                           temperature=key.temperature, segment_size=segment_size)
