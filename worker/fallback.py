"""Whisper's temperature fallback policy: when a chunk is decoded again, hotter, and which attempt wins.

The thresholds are Whisper's defaults (openai/whisper transcribe(); faster-whisper keeps them).
"""

from __future__ import annotations

from worker.whisper_types import ChunkResult

COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6


def is_silence(result: ChunkResult) -> bool:
    """Whisper's no-speech rule: likely silence and no confident text."""
    return result.no_speech_prob > NO_SPEECH_THRESHOLD and result.avg_logprob < LOG_PROB_THRESHOLD


def needs_fallback(result: ChunkResult) -> bool:
    """Repetitive or unlikely text is decoded again, hotter -- unless the chunk is silent."""
    failed = result.compression_ratio > COMPRESSION_RATIO_THRESHOLD or result.avg_logprob < LOG_PROB_THRESHOLD
    return failed and not is_silence(result)


def next_temperature(temperatures: tuple[float, ...], attempts: list[ChunkResult]) -> float | None:
    """The temperature of the next attempt for a chunk, or None when its last attempt stands."""
    if not attempts or not needs_fallback(attempts[-1]) or len(attempts) >= len(temperatures):
        return None
    return temperatures[len(attempts)]


def best_attempt(attempts: list[ChunkResult]) -> ChunkResult:
    """The last attempt if it passed; else, like faster-whisper, the most likely non-repetitive one."""
    if not needs_fallback(attempts[-1]):
        return attempts[-1]
    below = [a for a in attempts if a.compression_ratio <= COMPRESSION_RATIO_THRESHOLD]
    return max(below or attempts, key=lambda a: a.avg_logprob)
