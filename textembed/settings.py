"""Settings of the text-embedding service (on top of the shared core settings)."""

from dataclasses import dataclass

from core.model.backend import DTYPES
from core.settings import CoreSettings, override, setting


@dataclass(frozen=True)
class TextEmbedSettings(CoreSettings):
    """Everything the text-embedding service reads from the environment."""

    port: int = override("port", 5003)
    web_threads: int = override("web_threads", 32)  # above a GPU batch (32), so batches can fill
    textembed_model: str = setting("TEXTEMBED_MODEL", "all-MiniLM-L6-v2", "A sentence-transformers model baked "
                                   "into MODELS_DIR/textembed/<name>, or a local model directory.")
    textembed_device: str = setting("TEXTEMBED_DEVICE", "auto", "auto (CUDA when available), cuda or cpu.",
                                    choices=("auto", "cuda", "cpu"))
    textembed_dtype: str = setting("TEXTEMBED_DTYPE", "auto", "auto: float16 on CUDA, bfloat16 on a CPU with native "
                                   "bf16 (cosine >= 0.9998 to float32), else float32.", choices=DTYPES)
    max_inputs: int = setting("MAX_INPUTS", 256, "Texts in one request (413 above).", minimum=1)
    truncate_texts: bool = setting("TRUNCATE_TEXTS", False, "Cut texts over the model's token limit (as "
                                   "sentence-transformers does) instead of 413 text_too_long (as OpenAI does).")
