"""Client of the Whisper worker: transcribe one recording in any response format."""

from __future__ import annotations

from typing import Any

from inference_client.http import HttpClient, Media, read_media

RESPONSE_FORMATS = ("json", "verbose_json", "text", "srt", "vtt")
FILE_EXTENSIONS = {"json": ".json", "verbose_json": ".json", "text": ".txt", "srt": ".srt", "vtt": ".vtt"}


def form_fields(response_format: str, options: dict[str, Any]) -> list[tuple[str, str]]:
    """The worker's form fields for a format and options (booleans as true/false, lists comma-joined)."""
    if response_format not in RESPONSE_FORMATS:
        raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {response_format!r}")
    fields = [("response_format", response_format)]
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        fields.append((name, str(value)))
    return fields


def parse_transcript(response, response_format: str) -> dict | str:
    """A dict for json/verbose_json, the text itself for text/srt/vtt."""
    if response_format in ("json", "verbose_json"):
        return response.json()
    response.encoding = "utf-8"
    return response.text


class WhisperClient:
    """The Whisper worker at ``url`` (default: ``$WHISPER_WORKER_URL``), key ``$WHISPER_WORKER_API_KEY``.

    The default read timeout is 600 s: a long recording takes minutes on a busy worker.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 600.0, **options):
        self.http = HttpClient.from_env(url, api_key, "WHISPER_WORKER_URL", "WHISPER_WORKER_API_KEY",
                                        "the worker's URL (http://localhost:8080 locally)", timeout=timeout,
                                        **options)

    def transcribe(self, audio: Media, response_format: str = "json", *, language: str | None = None,
                   task: str | None = None, word_timestamps: bool | None = None, vad_filter: bool | None = None,
                   beam_size: int | None = None, temperature: float | list[float] | None = None,
                   initial_prompt: str | None = None) -> dict | str:
        """Transcribe a recording (path, bytes or binary file).

        Returns a dict for ``json``/``verbose_json`` and a string for ``text``/``srt``/``vtt``.
        """
        fields = form_fields(response_format, {
            "language": language, "task": task, "word_timestamps": word_timestamps, "vad_filter": vad_filter,
            "beam_size": beam_size, "temperature": temperature, "initial_prompt": initial_prompt})
        response = self.http.request("POST", "/transcribe", files=[("audio", read_media(audio, "audio"))],
                                     data=fields)
        return parse_transcript(response, response_format)

    def health(self) -> dict:
        """The worker's /health body (raises Unavailable while it is not ready)."""
        return self.http.health()
