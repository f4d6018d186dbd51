"""Settings of the CLIP embedding server (on top of the shared core settings)."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import CoreSettings, SettingsError, override, setting

DEFAULT_PROMPT_TEMPLATE = "a photo of a {}"
# JSON values a request holds besides its inputs and labels: keys and options.
JSON_VALUES_BESIDES_INPUTS = 64


@dataclass(frozen=True)
class ServerSettings(CoreSettings):
    """Everything the CLIP server reads from the environment."""

    port: int = override("port", 5001)
    web_threads: int = override("web_threads", 32)
    request_timeout_s: float = override("request_timeout_s", 30.0)
    clip_model: str = setting(
        "CLIP_MODEL", "demo",
        "open_clip architecture (ViT-B-32, ViT-L-14, ...), hf:ORG/NAME for transformers, demo "
        "(the embedded shapes model), fake (hash vectors, for tests) or sim:ARCH (a simulated GPU, benchmarks).")
    clip_pretrained: str | None = setting(
        "CLIP_PRETRAINED", None,
        "open_clip weights tag (openai, laion2b_s34b_b79k, ...), a local checkpoint path, or "
        "random (untrained, benchmarks only); auto = openai, or the embedded weights for demo.")
    clip_device: str = setting(
        "CLIP_DEVICE", "auto", "auto (CUDA when available), cuda, cuda:N or cpu; fp16 on CUDA, fp32 on CPU.")
    max_inputs: int = setting(
        "MAX_INPUTS", 64, "Images + texts in one /embed or /classify request (413 above).", minimum=1)
    max_labels: int = setting(
        "MAX_LABELS", 512, "Labels in one /classify request (413 above); at most MAX_QUEUE.", minimum=1)
    max_image_pixels: int = setting(
        "MAX_IMAGE_PIXELS", 40_000_000,
        "Largest image in pixels, checked from the header before decoding (decompression bombs).",
        minimum=1)
    label_cache_size: int = setting(
        "LABEL_CACHE_SIZE", 4096, "Label prompt embeddings kept for /classify (LRU).", minimum=0)
    sim_batch_base_ms: float = setting(
        "SIM_BATCH_BASE_MS", 3.0,
        "CLIP_MODEL=sim:...: fixed simulated GPU time per forward call (kernel launches), ms.", minimum=0)
    sim_per_item_ms: float = setting(
        "SIM_PER_ITEM_MS", 0.25,
        "CLIP_MODEL=sim:...: simulated GPU time per batch item, ms (0.25 ~ ViT-B-32 fp16 on an L4).",
        minimum=0)
    sim_lock_path: str = setting(
        "SIM_LOCK_PATH", "/tmp/clip-sim-gpu.lock",
        "CLIP_MODEL=sim:...: file every process on the instance locks around a forward (one GPU) "
        "and where busy time is counted.")

    @property
    def max_json_items(self) -> int:
        """Values one JSON body may hold: every input and label the routes accept, plus keys and options."""
        return self.max_inputs + self.max_labels + JSON_VALUES_BESIDES_INPUTS

    def check_consistency(self) -> None:
        """MAX_LABELS and MAX_INPUTS must fit in the queue: one request's items are queued together."""
        super().check_consistency()
        for env, value in (("MAX_LABELS", self.max_labels), ("MAX_INPUTS", self.max_inputs)):
            if value > self.max_queue:
                raise SettingsError(f"{env}={value} is larger than MAX_QUEUE={self.max_queue}: such a request "
                                    f"could never be queued; raise MAX_QUEUE or lower {env}")
    label_cache_mb: float = setting(
        "LABEL_CACHE_MB", 32.0,
        "Bytes the /classify label cache may hold (keys are token ids, ~3 KB an entry at 512-d).",
        minimum=0)
