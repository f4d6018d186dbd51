"""Settings of the Whisper transcription worker (on top of the shared core settings)."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import CoreSettings, override, setting


@dataclass(frozen=True)
class WorkerSettings(CoreSettings):
    """Everything the worker reads from the environment."""

    port: int = override("port", 8080)
    max_wait_ms: float = override(
        "max_wait_ms", 50.0,
        "How long the first 30 s chunk of a batch waits for company; a Whisper batch takes "
        "seconds, so waiting a little to fill it is cheap.")
    max_queue: int = override(
        "max_queue", 1024,
        "30 s chunks waiting for the model (about 1 MB of features each) before 429 + Retry-After.")
    request_timeout_s: float = override(
        "request_timeout_s", 900.0,
        "One deadline over the whole request (language detection, every temperature round); then "
        "504 and its queued chunks are dropped. Long files need minutes; match the deploy's --timeout.")
    whisper_model: str = setting(
        "WHISPER_MODEL", "tiny.en",
        "faster-whisper size (tiny.en, small, large-v3, distil-large-v3, ...) baked into "
        "MODELS_DIR, or a local CTranslate2 model directory; tiny.en is embedded for local runs; "
        "fake = hash text, real decoding (tests).")
    whisper_device: str = setting("WHISPER_DEVICE", "auto", "auto (CUDA when available), cuda or cpu.",
                                  choices=("auto", "cuda", "cpu"))
    whisper_compute_type: str = setting(
        "WHISPER_COMPUTE_TYPE", "auto", "CTranslate2 compute type; auto = float16 on CUDA, int8 on CPU.")
    whisper_cpu_threads: int = setting(
        "WHISPER_CPU_THREADS", 0, "CTranslate2 threads on CPU; 0 = one per core.", minimum=0)
    default_beam_size: int = setting(
        "DEFAULT_BEAM_SIZE", 5, "Beam size when a request does not set beam_size (Whisper's default).",
        minimum=1)
    pack_short_audio: bool = setting(
        "WHISPER_PACK_SHORT_AUDIO", False,
        "Pack short chunks of different concurrent requests into shared 30 s windows (up to 8x less "
        "encoder work for voice notes); off by default because requests then share a decoding context.")
    max_audio_seconds: float = setting(
        "MAX_AUDIO_SECONDS", 3600.0,
        "Longest audio accepted (413 above), read from the container before decoding.", minimum=1)
