"""The Whisper worker's event handler: one audio object -> ``<key>@<generation>.json``, ``.srt`` and ``.vtt``.

An event's options are /transcribe's (language, task, word_timestamps, vad_filter, beam_size, ...);
the json is verbose_json (segments with times and quality signals). The work goes through
``WhisperService`` like every other entry point.
"""

from __future__ import annotations

import json

from worker.formats import result_files
from worker.service import WhisperService


def _as_fields(options: dict) -> dict[str, list[str]]:
    """JSON option values -> the string lists form fields give (true -> "true", 5 -> "5")."""
    fields = {}
    for name, value in options.items():
        values = value if isinstance(value, list) else [value]
        fields[name] = [json.dumps(v) if isinstance(v, bool) else str(v) for v in values]
    return fields


def audio_handler(service: WhisperService):
    """The EventHandler for ``core.from_storage.event_routes.install_events``: audio bytes + options -> result files."""

    def run(data: bytes, options: dict, meta: dict) -> dict[str, tuple[bytes, str]]:
        parsed = service.options(_as_fields(options))
        return result_files(service.transcribe(data, parsed), meta)

    return run
