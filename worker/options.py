"""Transcription options from form fields or query parameters, validated into one frozen object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.errors import InvalidInput
from worker.languages import LANGUAGE_CODES

RESPONSE_FORMATS = ("json", "verbose_json", "text", "srt", "vtt")
TASKS = ("transcribe", "translate")
MAX_BEAM_SIZE = 10
MAX_TEMPERATURES = 6  # Whisper's own fallback list has 6; each value can cost a full decoding round
TEMPERATURE_STEP = 0.2  # Whisper's temperature_increment_on_fallback
MAX_PROMPT_CHARS = 2000  # Whisper keeps only the last 223 prompt tokens anyway
# Fields OpenAI clients send that need no handling here (the model is chosen by the server).
IGNORED_FIELDS = ("model", "stream")
KNOWN_FIELDS = ("language", "task", "response_format", "word_timestamps", "vad_filter", "beam_size",
                "temperature", "initial_prompt", "prompt", "timestamp_granularities",
                "timestamp_granularities[]") + IGNORED_FIELDS


@dataclass(frozen=True)
class TranscribeOptions:
    """What one /transcribe request asked for."""

    language: str | None = None
    task: str = "transcribe"
    response_format: str = "json"
    word_timestamps: bool = False
    vad_filter: bool = True
    beam_size: int = 5
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    initial_prompt: str | None = None


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise InvalidInput(f"{name} must be true or false, got {raw!r}", code="invalid_option")


def _temperatures(raw: str) -> tuple[float, ...]:
    """'0.2' -> 0.2, 0.4, ... 1.0 (Whisper's fallback); '0,0.5' -> exactly those."""
    try:
        values = [float(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise InvalidInput(f"temperature must be a number or a comma-separated list, got {raw!r}",
                           code="invalid_option") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise InvalidInput("temperature values must be between 0 and 1", code="invalid_option")
    if len(values) > 1:
        distinct = tuple(dict.fromkeys(values))  # a repeated value would only decode the same way again
        if len(distinct) > MAX_TEMPERATURES:
            raise InvalidInput(f"temperature lists at most {MAX_TEMPERATURES} values, got {len(distinct)}",
                               code="invalid_option")
        return distinct
    start = values[0]
    steps = int(round((1.0 - start) / TEMPERATURE_STEP + 1e-9))
    return tuple(round(start + TEMPERATURE_STEP * i, 4) for i in range(steps + 1))


def parse_options(values: Mapping[str, list[str]], *, multilingual: bool, model_name: str,
                  default_beam_size: int) -> TranscribeOptions:
    """Validate raw option values (name -> list of strings) against the loaded model."""
    unknown = sorted(set(values) - set(KNOWN_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown option {unknown[0]!r}; known: {', '.join(KNOWN_FIELDS[:9])}",
                           code="unknown_field")

    def one(name: str) -> str | None:
        found = values.get(name)
        return found[-1] if found else None

    options: dict = {"beam_size": default_beam_size}
    if (language := one("language")) is not None and language.strip():
        language = language.strip().lower()
        if language not in LANGUAGE_CODES:
            raise InvalidInput(f"unknown language {language!r}; use an ISO 639-1 code such as en, "
                               "de, ja", code="invalid_option")
        if not multilingual and language != "en":
            raise InvalidInput(f"model {model_name} is English-only; language must be en or omitted",
                               code="invalid_option")
        options["language"] = language
    if (task := one("task")) is not None:
        if task not in TASKS:
            raise InvalidInput(f"task must be one of {', '.join(TASKS)}", code="invalid_option")
        if task == "translate" and not multilingual:
            raise InvalidInput(f"model {model_name} is English-only and cannot translate; deploy a "
                               "multilingual model (e.g. WHISPER_MODEL=small or large-v3)",
                               code="invalid_option")
        options["task"] = task
    if (response_format := one("response_format")) is not None:
        if response_format not in RESPONSE_FORMATS:
            raise InvalidInput(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}",
                               code="invalid_option")
        options["response_format"] = response_format
    if (raw := one("word_timestamps")) is not None:
        options["word_timestamps"] = _bool("word_timestamps", raw)
    granularities = (values.get("timestamp_granularities[]") or []) + (values.get("timestamp_granularities") or [])
    if "word" in granularities:  # OpenAI clients ask for words this way
        options["word_timestamps"] = True
    if (raw := one("vad_filter")) is not None:
        options["vad_filter"] = _bool("vad_filter", raw)
    if (raw := one("beam_size")) is not None:
        try:
            beam_size = int(raw)
        except ValueError:
            raise InvalidInput(f"beam_size must be an integer, got {raw!r}", code="invalid_option") from None
        if not 1 <= beam_size <= MAX_BEAM_SIZE:
            raise InvalidInput(f"beam_size must be between 1 and {MAX_BEAM_SIZE}", code="invalid_option")
        options["beam_size"] = beam_size
    if (raw := one("temperature")) is not None:
        options["temperatures"] = _temperatures(raw)
    prompt = one("initial_prompt") or one("prompt")
    if prompt:
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInput(f"initial_prompt is longer than {MAX_PROMPT_CHARS} characters",
                               code="invalid_option")
        options["initial_prompt"] = prompt
    return TranscribeOptions(**options)
