"""Render a transcript as json, verbose_json, text, srt or vtt (body, content type), and the
result files of events and batch jobs (``result_files``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Word:
    """One word with its time span and probability."""

    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    """One transcribed segment, with Whisper's quality signals."""

    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    words: list[Word] | None = None


@dataclass
class Transcript:
    """A whole transcription result."""

    language: str
    language_probability: float
    duration: float
    segments: list[Segment]
    task: str = "transcribe"
    warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All segment texts joined (Whisper segments carry their own leading spaces)."""
        return "".join(segment.text for segment in self.segments).strip()


def _json(transcript: Transcript, verbose: bool) -> dict:
    body = {
        "text": transcript.text,
        "language": transcript.language,
        "language_probability": round(transcript.language_probability, 4),
        "duration": round(transcript.duration, 3),
    }
    segments = []
    for s in transcript.segments:
        item = {"id": s.id, "start": s.start, "end": s.end, "text": s.text.strip()}
        if verbose:
            item.update(avg_logprob=round(s.avg_logprob, 4), no_speech_prob=round(s.no_speech_prob, 4),
                        compression_ratio=round(s.compression_ratio, 4), temperature=s.temperature)
            if s.words is not None:
                item["words"] = [{"word": w.word, "start": w.start, "end": w.end,
                                  "probability": round(w.probability, 4)} for w in s.words]
        segments.append(item)
    body["segments"] = segments
    if verbose:
        body["task"] = transcript.task
    if transcript.warnings:
        body["warnings"] = transcript.warnings
    return body


def timestamp(seconds: float, separator: str) -> str:
    """HH:MM:SS{separator}mmm, rounding to the millisecond (',' for SRT, '.' for VTT)."""
    millis = max(0, int(round(seconds * 1000)))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cue_text(text: str) -> str:
    # A blank line would end the cue early; "-->" inside text would read as a timing line.
    return " ".join(text.split()).replace("-->", "->")


def to_srt(transcript: Transcript) -> str:
    """SubRip: numbered cues, HH:MM:SS,mmm timings, blank line between cues."""
    cues = []
    for n, s in enumerate(transcript.segments, start=1):
        cues.append(f"{n}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{_cue_text(s.text)}\n")
    return "\n".join(cues)


def to_vtt(transcript: Transcript) -> str:
    """WebVTT: WEBVTT header, HH:MM:SS.mmm timings."""
    cues = [f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{_cue_text(s.text)}\n"
            for s in transcript.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def render(transcript: Transcript, response_format: str) -> tuple[str, str]:
    """(body, content type) for a response format."""
    if response_format in ("json", "verbose_json"):
        return json.dumps(_json(transcript, response_format == "verbose_json")), "application/json"
    if response_format == "text":
        return transcript.text + "\n", "text/plain; charset=utf-8"
    if response_format == "srt":
        return to_srt(transcript), "application/x-subrip; charset=utf-8"
    if response_format == "vtt":
        return to_vtt(transcript), "text/vtt; charset=utf-8"
    raise ValueError(f"unknown response format {response_format!r}")


def result_files(transcript: Transcript, meta: dict | None = None) -> dict[str, tuple[bytes, str]]:
    """The files an event or a batch job writes per input: ``{extension: (bytes, content type)}``.

    ``json`` is verbose_json, after ``meta`` (what the event names: input, generation, ...) when
    given; ``srt`` and ``vtt`` are the subtitles. One place, so the two doors cannot drift apart.
    """
    body = {**(meta or {}), **_json(transcript, verbose=True)}
    files = {"json": (json.dumps(body).encode("utf-8"), "application/json")}
    for extension in ("srt", "vtt"):
        text, content_type = render(transcript, extension)
        files[extension] = (text.encode("utf-8"), content_type)
    return files
