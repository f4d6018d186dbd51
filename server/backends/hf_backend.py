"""Hugging Face transformers backend: ``CLIP_MODEL=hf:openai/clip-vit-large-patch14`` style names."""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable
from pathlib import Path

import numpy as np

from server.backends.base import IMAGE, ClipBackend
from server.backends.torch_util import dtype_for, stack_to_device, to_unit_rows
from server.images import ImageSpec
from server.models import ModelNotBaked, is_local_path, read_manifest

_RESAMPLE_NAMES = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "lanczos"}


def image_spec_from_processor(processor) -> ImageSpec:
    """CLIPImageProcessor settings -> the ImageSpec our decoder reproduces."""
    size = processor.size or {}
    crop = processor.crop_size or {}
    resample = getattr(processor, "resample", 3)
    resample = _RESAMPLE_NAMES.get(int(getattr(resample, "value", resample)), "bicubic")
    if "shortest_edge" in size:
        out = crop.get("height", size["shortest_edge"]) if processor.do_center_crop else size["shortest_edge"]
        return ImageSpec(size=out, resize_short=size["shortest_edge"], mean=tuple(processor.image_mean),
                         std=tuple(processor.image_std), resample=resample)
    return ImageSpec(size=size["height"], mean=tuple(processor.image_mean),
                     std=tuple(processor.image_std), resample=resample, resize_mode="squash")


class HFClipBackend(ClipBackend):
    """Loads a saved ``CLIPModel`` directory (baked, or a local path after ``hf:``)."""

    def _directory(self) -> Path:
        if is_local_path(self.spec.name):
            path = Path(self.spec.name).expanduser()
            if not (path / "config.json").is_file():
                raise ModelNotBaked(f"CLIP_MODEL=hf:{self.spec.name}: no config.json in that directory")
            return path
        baked = self.spec.baked_dir(self.settings.models_dir)
        read_manifest(baked)  # fails fast with the path and the bake command
        return baked

    def check_weights(self) -> None:
        """Raise now if the model directory is missing or an explicit CUDA device is."""
        self.check_device(self.settings.clip_device, "CLIP_DEVICE")
        self._directory()

    def load(self) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        directory = self._directory()
        self.weights = str(directory)
        self.device = self.pick_device(self.settings.clip_device, "CLIP_DEVICE")
        torch_dtype = dtype_for(self.device)
        self.dtype = str(torch_dtype).removeprefix("torch.")
        self.model = CLIPModel.from_pretrained(directory, dtype=torch_dtype, local_files_only=True)
        self.model.to(self.device).eval()
        self._tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        # Fast (Rust) tokenizers mutate their truncation state per call and raise "Already
        # borrowed" when two request threads tokenise at once.
        self._tokenizer_lock = threading.Lock()
        self.image_spec = image_spec_from_processor(
            CLIPImageProcessor.from_pretrained(directory, local_files_only=True))
        self.context_length = int(self.model.config.text_config.max_position_embeddings)
        self.logit_scale = float(self.model.logit_scale.exp().item())
        size = self.image_spec.size
        self.dim = int(self.forward(IMAGE, [np.zeros((3, size, size), np.float32)])[0].shape[0])

    def tokenize(self, text: str) -> np.ndarray:
        with self._tokenizer_lock:
            ids = self._tokenizer(text, padding="max_length", truncation=True,
                                  max_length=self.context_length)["input_ids"]
        return np.asarray(ids, dtype=np.int64)

    def forward(self, kind: Hashable, batch: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            if kind == IMAGE:
                output = self.model.get_image_features(
                    pixel_values=stack_to_device(batch, self.device, dtype_for(self.device)))
            else:
                output = self.model.get_text_features(input_ids=stack_to_device(batch, self.device))
            # transformers 5 returns a model output whose pooler_output is the projection.
            features = getattr(output, "pooler_output", output)
            return to_unit_rows(features)
