"""The bare-model baselines, run in a process of their own: `python -m bench.bare clip|whisper ...`.

A fresh process keeps the measurement free of the benchmark driver's state (it holds hundreds
of megabytes of test images and runs client threads); it prints one JSON line of rates.
"""

from __future__ import annotations

import json
import sys
import time


def clip(repeats: int, n_images: int = 64) -> dict:
    """Forward-only images/s of ViT-B-32 (random weights) on preprocessed tensors, per batch size."""
    import open_clip
    import torch

    model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.eval()
    pixels = torch.randn(n_images, 3, 224, 224)
    rates: dict[str, list[float]] = {}
    with torch.inference_mode():
        model.encode_image(pixels[:8])  # warm-up
        for batch in (1, 8, 16, 32):
            rates[str(batch)] = []
            for _ in range(repeats):
                started = time.perf_counter()
                for start in range(0, n_images, batch):
                    model.encode_image(pixels[start:start + batch])
                rates[str(batch)].append(n_images / (time.perf_counter() - started))
    return rates


def decode(repeats: int, n_images: int = 12) -> dict:
    """Images/s on one thread: 12 MP JPEG -> model input, reference transform vs this server's path."""
    import io

    import open_clip
    from PIL import Image

    from server.images import ImageSpec, decode_image
    from tests.media import encode, photo_like

    model, _, reference = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    cfg = model.visual.preprocess_cfg
    spec = ImageSpec(size=224, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    images = [encode(photo_like(4000, 3000, seed=n), "JPEG", quality=90) for n in range(n_images)]

    def rate(convert) -> float:
        started = time.perf_counter()
        for data in images:
            convert(data)
        return n_images / (time.perf_counter() - started)

    return {
        "reference": [rate(lambda d: reference(Image.open(io.BytesIO(d)).convert("RGB"))) for _ in range(repeats)],
        "fast": [rate(lambda d: decode_image(d, spec, 50_000_000)) for _ in range(repeats)],
    }


def whisper(repeats: int, model_dir: str, cpu_threads: int, long_path: str, clip_paths: list[str]) -> dict:
    """Audio-s per wall-s, decoding included (as the servers must): the batched pipeline on the long
    file, transcribe() clip after clip."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel
    from faster_whisper.audio import decode_audio

    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=cpu_threads)
    pipeline = BatchedInferencePipeline(model)

    def run_long():
        started = time.perf_counter()
        segments, info = pipeline.transcribe(decode_audio(long_path), batch_size=8, beam_size=5,
                                             without_timestamps=False)
        list(segments)
        return info.duration / (time.perf_counter() - started)

    def run_clips():
        started, seconds = time.perf_counter(), 0.0
        for path in clip_paths:
            segments, info = model.transcribe(decode_audio(path), beam_size=5)
            list(segments)
            seconds += info.duration
        return seconds / (time.perf_counter() - started)

    run_clips()  # warm-up
    return {"long": [run_long() for _ in range(repeats)], "clips": [run_clips() for _ in range(repeats)]}


if __name__ == "__main__":
    which, arguments = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"clip": clip, "decode": decode, "whisper": whisper}[which](**arguments)))
