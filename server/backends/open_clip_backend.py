"""open_clip backend: any open_clip architecture, its pretrained tags, local checkpoints, the demo."""

from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path

import numpy as np

from server.backends.base import IMAGE, ClipBackend
from server.backends.torch_util import dtype_for, stack_to_device, to_unit_rows
from server.backends.word_cache import bound_word_cache
from server.images import ImageSpec
from server.models import ModelNotBaked, is_local_path, read_manifest


class OpenClipBackend(ClipBackend):
    """Loads with ``open_clip.create_model_and_transforms``; fp16 + inference_mode on CUDA."""

    def _weights(self) -> dict:
        """Keyword arguments that point open_clip at local weights only (never the network)."""
        spec = self.spec
        if spec.family == "demo":
            from server import demo

            baked = spec.baked_dir(self.settings.models_dir)
            if spec.pretrained:
                checkpoint = spec.pretrained
            elif (baked / "manifest.json").is_file():
                checkpoint = str(baked / read_manifest(baked)["file"])
            else:
                checkpoint = str(demo.checkpoint_path())  # the copy committed in the repository
            return {"model_name": demo.MODEL_NAME, "pretrained": os.path.expanduser(checkpoint)}
        if spec.pretrained == "random":
            return {"model_name": spec.name, "pretrained": None}
        if is_local_path(spec.pretrained):
            path = Path(spec.pretrained).expanduser()
            if not path.is_file():
                raise ModelNotBaked(f"CLIP_PRETRAINED={spec.pretrained}: no such checkpoint file")
            return {"model_name": spec.name, "pretrained": str(path)}
        baked = spec.baked_dir(self.settings.models_dir)
        manifest = read_manifest(baked)
        # open_clip resolves the tag (weights file, QuickGELU, mean/std) from its own table and
        # finds the file in this cache, which bake filled; HF_HUB_OFFLINE keeps it off the network.
        return {"model_name": spec.name, "pretrained": manifest["pretrained"],
                "cache_dir": str(baked / manifest["cache_dir"])}

    def check_weights(self) -> None:
        """Raise now (before any loading) if the weights are missing or an explicit CUDA device is."""
        self.check_device(self.settings.clip_device, "CLIP_DEVICE")
        self._weights()

    def load(self) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # run time never downloads: weights were baked
        import open_clip
        import torch

        if self.spec.family == "demo":
            from server import demo

            demo.register()

        self.device = self.pick_device(self.settings.clip_device, "CLIP_DEVICE")
        torch_dtype = dtype_for(self.device)
        self.dtype = str(torch_dtype).removeprefix("torch.")
        kwargs = self._weights()
        self.weights = kwargs.get("pretrained") and str(kwargs.get("cache_dir") or kwargs["pretrained"])
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                kwargs.pop("model_name"), device=self.device,
                precision="fp16" if torch_dtype == torch.float16 else "fp32", **kwargs)
        except RuntimeError as err:
            if "download" in str(err).lower() or "not found" in str(err).lower():
                raise ModelNotBaked(f"{err}. Bake the weights with `python -m server.bake`.") from err
            raise
        model.eval()
        self.model = model
        self._tokenizer = open_clip.get_tokenizer(self.spec.name)
        bound_word_cache(self._tokenizer)  # its own word cache never forgets (server/backends/word_cache.py)
        cfg = model.visual.preprocess_cfg
        size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
        self.image_spec = ImageSpec(size=size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                                    resample=cfg.get("interpolation", "bicubic"),
                                    resize_mode=cfg.get("resize_mode", "shortest"))
        self.context_length = self._tokenizer.context_length
        self.logit_scale = float(model.logit_scale.exp().item())
        self.dim = int(self.forward(IMAGE, [np.zeros((3, size, size), np.float32)])[0].shape[0])

    def tokenize(self, text: str) -> np.ndarray:
        # open_clip truncates to context_length and keeps the end-of-text token last.
        return self._tokenizer([text])[0].numpy()

    def forward(self, kind: Hashable, batch: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            if kind == IMAGE:
                pixels = stack_to_device(batch, self.device, dtype_for(self.device))
                features = self.model.encode_image(pixels)
            else:
                tokens = stack_to_device(batch, self.device)
                features = self.model.encode_text(tokens)
            return to_unit_rows(features)

