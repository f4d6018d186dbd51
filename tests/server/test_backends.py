"""Real backends: preprocessing parity with each model's reference transform, the transformers backend,
missing weights, and the CUDA fp16 path (GPU-only)."""

from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pytest
from PIL import Image

from core.errors import ModelNotBaked
from server.backends import IMAGE, TEXT, make_backend
from server.models import resolve_spec, write_manifest
from server.settings import ServerSettings
from tests.conftest import cuda_available
from tests.media import encode, photo_like

pytestmark = [pytest.mark.integration]

# Several sizes and kinds: a 12 MP JPEG (draft-decoded), landscape and portrait, a tiny one,
# greyscale and transparent PNGs.
PARITY_IMAGES = {
    "12MP jpeg": encode(photo_like(4000, 3000, seed=1), "JPEG", quality=90),
    "640x480 jpeg": encode(photo_like(640, 480, seed=2), "JPEG", quality=90),
    "300x900 png": encode(photo_like(300, 900, seed=3), "PNG"),
    "50x30 jpeg": encode(photo_like(50, 30, seed=4), "JPEG"),
    "greyscale png": encode(photo_like(500, 400, seed=5).convert("L"), "PNG"),
    "rgba png": encode(photo_like(256, 256, seed=6).convert("RGBA"), "PNG"),
}


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def loaded(**overrides):
    settings = ServerSettings.from_env({}, log_level="WARNING", **overrides)
    backend = make_backend(settings)
    backend.check_weights()
    backend.load()
    return backend


def reference_rgb(data: bytes) -> Image.Image:
    """What the reference pipelines see: a full decode, alpha composited over white like ours."""
    from server.images import to_rgb

    return to_rgb(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("model, pretrained", [("demo", None), ("ViT-B-32", "random")])
def test_open_clip_fast_path_matches_the_reference_transform(model, pretrained):
    import torch

    backend = loaded(clip_model=model, clip_pretrained=pretrained)
    import open_clip

    transform = open_clip.image_transform(backend.model.visual.preprocess_cfg["size"], is_train=False,
                                          mean=backend.image_spec.mean, std=backend.image_spec.std)
    for name, data in PARITY_IMAGES.items():
        ours = backend.forward(IMAGE, [backend.preprocess(IMAGE, data)])[0]
        with torch.inference_mode():
            theirs = backend.model.encode_image(transform(reference_rgb(data)).unsqueeze(0))[0].numpy()
        assert cosine(ours, theirs) >= 0.99, name


def write_clip_tokenizer_files(directory) -> None:
    """open_clip's CLIP BPE as vocab.json/merges.txt (same ids as open_clip's tokenizer)."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    merges = gzip.open(open_clip.tokenizer.default_bpe()).read().decode("utf-8").split("\n")[1:48895]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({token: n for n, token in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


@pytest.fixture(scope="module")
def tiny_hf_clip(tmp_path_factory):
    """A small random transformers CLIPModel saved with tokenizer and image processor (no network)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    directory = tmp_path_factory.mktemp("hf-clip")
    write_clip_tokenizer_files(directory)
    CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt")).save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48}).save_pretrained(directory)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77),
        vision_config=dict(image_size=48, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2),
        projection_dim=24)
    CLIPModel(config).save_pretrained(directory)
    return directory


def test_transformers_backend_matches_clip_image_processor_and_open_clip_token_ids(tiny_hf_clip):
    import open_clip
    import torch
    from transformers import CLIPImageProcessor

    backend = loaded(clip_model=f"hf:{tiny_hf_clip}")
    assert backend.dim == 24 and backend.context_length == 77 and backend.image_spec.size == 48
    processor = CLIPImageProcessor.from_pretrained(tiny_hf_clip)
    for name, data in PARITY_IMAGES.items():
        ours = backend.forward(IMAGE, [backend.preprocess(IMAGE, data)])[0]
        pixels = processor(images=reference_rgb(data), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            output = backend.model.get_image_features(pixel_values=pixels)
        theirs = getattr(output, "pooler_output", output)[0].numpy()
        assert cosine(ours, theirs) >= 0.99, name
    reference = open_clip.get_tokenizer("ViT-B-32")
    for text in ["a photo of a red circle", "Zero-shot CLIP, über alles! 123", "word " * 100]:
        ours, theirs = backend.tokenize(text).tolist(), reference([text])[0].tolist()
        end = theirs.index(49407) + 1  # padding differs (end-of-text vs 0); the tokens do not
        assert len(ours) == 77 and ours[:end] == theirs[:end]
    vectors = backend.forward(TEXT, [backend.tokenize("a cat"), backend.tokenize("a dog")])
    assert all(abs(np.linalg.norm(v) - 1) < 1e-5 for v in vectors)


def test_transformers_backend_loads_a_baked_repo_by_name(tiny_hf_clip, tmp_path):
    import shutil

    settings = ServerSettings.from_env({}, clip_model="hf:example/tiny-clip", models_dir=str(tmp_path))
    with pytest.raises(ModelNotBaked, match="python -m server.bake"):
        make_backend(settings).check_weights()
    baked = resolve_spec(settings).baked_dir(tmp_path)
    shutil.copytree(tiny_hf_clip, baked)
    write_manifest(baked, family="hf", name="example/tiny-clip")
    backend = loaded(clip_model="hf:example/tiny-clip", models_dir=str(tmp_path))
    assert backend.describe()["model"] == "hf:example/tiny-clip" and backend.describe()["weights"] == str(baked)


def test_missing_open_clip_weights_name_the_path_and_the_bake_command(tmp_path):
    settings = ServerSettings.from_env({}, clip_model="vit-l-14", models_dir=str(tmp_path))
    with pytest.raises(ModelNotBaked) as missing:
        make_backend(settings).check_weights()
    message = str(missing.value)
    assert str(tmp_path / "clip" / "open_clip__ViT-L-14__openai" / "manifest.json") in message
    assert "python -m server.bake" in message


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CUDA")
def test_cuda_fp16_matches_cpu_fp32_and_batches():
    cpu = loaded(clip_model="demo", clip_device="cpu")
    gpu = loaded(clip_model="demo", clip_device="cuda")
    assert gpu.dtype == "float16" and gpu.default_batch_size() == 32
    arrays = [gpu.preprocess(IMAGE, data) for data in PARITY_IMAGES.values()] * 6
    on_gpu = gpu.forward(IMAGE, arrays)
    on_cpu = cpu.forward(IMAGE, arrays[:6])
    assert len(on_gpu) == len(arrays)
    for a, b in zip(on_gpu[:6], on_cpu):
        assert cosine(a, b) >= 0.99
