"""Small torch helpers shared by the torch-based CLIP backends (batcher thread only)."""

from __future__ import annotations

import numpy as np

from core.settings import SettingsError


def resolve_device(setting: str) -> str:
    """CLIP_DEVICE -> a torch device string; auto picks CUDA when it is there."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        # A SettingsError, not a load failure: the start stops with this one line (server/__main__.py)
        # and the worker does not boot, instead of serving fp32 replicas from the CPU (issue 23).
        raise SettingsError(f"CLIP_DEVICE={setting} but CUDA is not available in this container "
                            "(no GPU attached, or its driver failed to initialise)")
    return setting


def check_device(setting: str) -> None:
    """Raise SettingsError at start-up, before any loading, when an explicit CUDA device is missing."""
    if setting.startswith("cuda"):  # auto and cpu need no torch import here
        resolve_device(setting)


def dtype_for(device: str):
    """fp16 on CUDA (twice the throughput, same ranking), fp32 on CPU (fp16 is slow there)."""
    import torch

    return torch.float16 if device.startswith("cuda") else torch.float32


def stack_to_device(batch: list[np.ndarray], device: str, dtype=None):
    """Stack preprocessed numpy arrays into one tensor on the device."""
    import torch

    tensor = torch.from_numpy(np.stack(batch))
    if device.startswith("cuda"):
        tensor = tensor.pin_memory()
    tensor = tensor.to(device, non_blocking=True)
    return tensor.to(dtype) if dtype is not None else tensor


def to_unit_rows(features) -> list[np.ndarray]:
    """Model features -> L2-normalised float32 numpy rows (normalised in fp32 for precision)."""
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return list(features.cpu().numpy())
