"""Packing short chunks from different requests into shared 30 s windows (WHISPER_PACK_SHORT_AUDIO).

Whisper's encoder always processes a 30 s window, so a 3 s voice note padded to 30 s costs as
much encoder time as 30 s of speech. Batching does not change that; packing does: several short
chunks go into one window, separated by short silences, and the decoded segments are split back
by their timestamps. faster-whisper's VAD already packs the speech of *one* recording this way
(``collect_chunks``); this extends it across requests.

Safety: a segment is handed back only if it lies inside one request's span; if any segment of a
window reaches into a neighbour's audio, that window's chunks are decoded again one by one, so a
transcript never receives words from another request's audio.
"""

from __future__ import annotations

import numpy as np

WINDOW_SECONDS = 30.0
GAP_SECONDS = 0.6  # silence between packed chunks: Whisper ends its segments in such pauses
SLACK_SECONDS = 0.25  # overlap with a neighbour's speech tolerated: timestamps are approximate, words are longer
FRAMES_PER_SECOND = 100  # log-mel frames


def plan_windows(durations: list[float], owners: list[object], capacity_s: float = WINDOW_SECONDS,
                 gap_s: float = GAP_SECONDS) -> list[list[int]]:
    """Group chunk indices into windows of at most ``capacity_s`` (first fit, arrival order kept).

    Chunks of the same owner (request) never share a window: VAD already packed each recording's
    own speech, and a request alone must get exactly what it would get without packing.
    """
    windows: list[list[int]] = []
    used: list[float] = []
    for index, (duration, owner) in enumerate(zip(durations, owners)):
        for n, window in enumerate(windows):
            if used[n] + gap_s + duration <= capacity_s and all(owners[i] != owner for i in window):
                window.append(index)
                used[n] += gap_s + duration
                break
        else:
            windows.append([index])
            used.append(duration)
    return windows


def pack_features(features: list[np.ndarray], gap_s: float = GAP_SECONDS) -> tuple[np.ndarray, list[tuple]]:
    """Concatenate unpadded log-mel features with gaps; returns (features, [(start_s, end_s)] spans)."""
    gap = np.zeros((features[0].shape[0], int(round(gap_s * FRAMES_PER_SECOND))), dtype=features[0].dtype)
    pieces, spans, position = [], [], 0
    for n, feature in enumerate(features):
        if n:
            pieces.append(gap)
            position += gap.shape[1]
        spans.append((position / FRAMES_PER_SECOND, (position + feature.shape[1]) / FRAMES_PER_SECOND))
        pieces.append(feature)
        position += feature.shape[1]
    return np.concatenate(pieces, axis=1), spans


def assign_segments(subsegments: list[dict], spans: list[tuple[float, float]],
                    slack_s: float = SLACK_SECONDS) -> list[list[dict]] | None:
    """Split a window's segments among its members, or None if any segment holds another's speech.

    A segment belongs to the member whose cell (gap middle to gap middle) holds its midpoint. It may
    run into the gaps -- Whisper often ends a segment where the next speech starts -- but it must
    not overlap any other member's speech by more than the slack, or it could carry their words.
    """
    edges = [(spans[n][1] + spans[n + 1][0]) / 2 for n in range(len(spans) - 1)]
    members: list[list[dict]] = [[] for _ in spans]
    for segment in subsegments:
        middle = (segment["start"] + segment["end"]) / 2
        owner = sum(middle >= edge for edge in edges)
        for other, (start, end) in enumerate(spans):
            overlap = min(end, segment["end"]) - max(start, segment["start"])
            if other != owner and overlap > slack_s:
                return None
        members[owner].append(segment)
    return members
