"""``BaseBackend``: defaults for the Backend protocol (core/model/runner.py), so a new model writes
only ``load`` and ``forward`` (and ``preprocess`` when its inputs need work on the request threads).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from core.settings import SettingsError

# MAX_BATCH_SIZE=auto: a GPU keeps busy with batches of 32 without making the first request of a
# batch wait long; on a CPU throughput stops growing around 8 (bench/clip_bench.py measured CLIP).
GPU_BATCH_SIZE = 32
CPU_BATCH_SIZE = 8
# A model's precision, setting -> torch dtype name. "auto": float16 on a GPU (as CLIP); bfloat16 on a CPU
# whose instructions do bf16 natively (AVX512_BF16 or AMX: AMD Zen 4, Intel Sapphire Rapids and later),
# where a BERT's matrix products run 1.6-1.7x faster and its pooled vectors keep cosine >= 0.9998 to
# float32 (MiniLM, bench/textembed_bench.py); float32 on any other CPU, where bf16 is emulated and slower.
DTYPES = ("auto", "float32", "bfloat16", "float16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_does_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has native bf16 instructions (its flags in /proc/cpuinfo; False off Linux)."""
    try:
        with cpuinfo.open() as lines:
            flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


class BaseBackend:
    """A backend with the protocol's defaults; subclasses set ``name`` and ``device`` and implement
    ``load`` (batcher thread) and ``forward`` (one output per input, in order)."""

    name = "model"
    device = "cpu"
    warmup_inputs: tuple[tuple[Hashable, Any], ...] = ()  # (kind, raw input): warm-up batches are made of these
    weights: str | None = None  # where the weights come from (for /health, keyed callers only)

    def check_weights(self) -> None:
        """Nothing to check by default; a backend with files on disk raises ModelNotBaked here."""

    def load(self) -> None:
        raise NotImplementedError

    def forward(self, kind: Hashable, batch: list[Any]) -> Sequence[Any]:
        raise NotImplementedError

    def default_batch_size(self) -> int:
        """32 on a GPU, 8 on a CPU."""
        return GPU_BATCH_SIZE if self.device.startswith("cuda") else CPU_BATCH_SIZE

    def warmup_batches(self, batch_size: int) -> list[tuple[Hashable, list[Any]]]:
        """One full batch of each ``warmup_inputs`` entry, preprocessed as a request's would be."""
        return [(kind, [self.preprocess(kind, raw)] * batch_size) for kind, raw in self.warmup_inputs]

    def preprocess(self, kind: Hashable, raw: Any) -> Any:
        """The raw input as forward() takes it."""
        return raw

    def postprocess(self, kind: Hashable, output: Any) -> Any:
        """The forward() output as the response value."""
        return output

    def describe(self) -> dict:
        """Model, device, vector size (embedding models) and weights, for /health."""
        return {"model": self.name, "device": self.device, "dim": getattr(self, "dim", None),
                "dtype": getattr(self, "dtype", None), "weights": self.weights}

    @staticmethod
    def pick_device(setting: str, env: str = "device") -> str:
        """A device setting (auto, cuda, cuda:N, cpu) -> the torch device to load on. ``cuda`` without a
        usable GPU is a SettingsError, not a quiet fall-back to the CPU: a GPU deploy must not serve
        from the CPU, and ``check_device`` raises it at start-up (docs/deploy.md, Processes and concurrency)."""
        import torch

        if setting == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if setting.startswith("cuda") and not torch.cuda.is_available():
            raise SettingsError(f"{env}={setting} but CUDA is not available in this container (torch "
                                f"{torch.__version__}, CUDA build {torch.version.cuda}: no GPU attached, or its "
                                "driver failed to initialise)")
        return setting

    @staticmethod
    def pick_dtype(setting: str, device: str) -> str:
        """A dtype setting (DTYPES) on ``device`` -> the torch dtype's name to load the weights in."""
        if setting != "auto":
            return setting
        if device.startswith("cuda"):
            return "float16"
        return "bfloat16" if cpu_does_bf16() else "float32"

    @classmethod
    def check_device(cls, setting: str, env: str = "device") -> None:
        """From ``check_weights``: an explicit CUDA device that is missing stops the start (the launcher's
        one ``error:`` line, or a worker that does not boot), before anything loads."""
        if setting.startswith("cuda"):  # auto and cpu need no torch import here
            cls.pick_device(setting, env)
