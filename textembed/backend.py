"""A sentence-transformers model (BERT family: mean pooling, then L2 normalisation) on torch."""

import json
from pathlib import Path

import numpy as np

from core.errors import ModelNotBaked, PayloadTooLarge
from core.model.text_embedding import CHARS_PER_TOKEN, TextBackend


class SentenceBackend(TextBackend):
    """Tokenises on the request threads; pads, runs and pools a batch on the batcher thread."""

    warmup_inputs = (("text", "a sentence to warm up the model"),)

    def __init__(self, settings):
        self.settings, self.name, self.dim, self.max_tokens = settings, Path(settings.textembed_model).name, None, 256
        local = settings.textembed_model.startswith(("/", ".", "~"))
        self.path = Path(settings.textembed_model if local else f"{settings.models_dir}/textembed/{self.name}")
        self.weights = str(self.path)

    def check_weights(self) -> None:
        self.check_device(self.settings.textembed_device, "TEXTEMBED_DEVICE")  # cuda without a GPU: no start
        if not (self.path / "model.safetensors").is_file():
            raise ModelNotBaked(f"no model in {self.path}: bake it with `python -m textembed.bake`")

    def load(self) -> None:
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        self.device = self.pick_device(self.settings.textembed_device, "TEXTEMBED_DEVICE")
        self.max_tokens = json.loads((self.path / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.tokenizer.no_truncation(), self.tokenizer.no_padding()  # preprocess() decides; nothing is padded
        self.dtype = self.pick_dtype(self.settings.textembed_dtype, self.device)  # fp16 on a GPU, bf16 on some CPUs
        self.model = AutoModel.from_pretrained(self.path, dtype=getattr(torch, self.dtype)).to(self.device).eval()
        self.dim, self.encode = self.model.config.hidden_size, self.mean_pooling_encoder(self.model)

    def preprocess(self, kind, text: str) -> np.ndarray:
        """One text -> its token ids ([CLS] ... [SEP]); over the limit: 413, or cut with TRUNCATE_TEXTS."""
        ids = self.tokenizer.encode(text[: CHARS_PER_TOKEN * self.max_tokens]).ids
        if len(ids) > self.max_tokens or len(text) > CHARS_PER_TOKEN * self.max_tokens:
            if not self.settings.truncate_texts:
                raise PayloadTooLarge(f"a text of {len(text)} characters is over this model's {self.max_tokens} "
                                      "tokens: split it, or set TRUNCATE_TEXTS=true", code="text_too_long")
            ids = ids[: self.max_tokens - 1] + ids[-1:]
        return np.asarray(ids)

    def forward_chunk(self, kind, batch: list[np.ndarray]) -> list[np.ndarray]:
        return self.encode(batch)  # a BERT on packed tokens (core/model/bert.py)
