"""The embedded demo CLIP model: size, offline loading, held-out accuracy, semantics, determinism."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from server import demo
from server.demo.evaluate import zero_shot_accuracy
from server.demo.shapes import all_captions, caption, draw_shape
from server.demo.train import _create, train

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def committed():
    """The committed checkpoint, loaded the way open_clip loads any local checkpoint."""
    return _create(pretrained=demo.checkpoint_path())


def test_checkpoint_is_small_and_fp16():
    from safetensors import safe_open

    assert demo.checkpoint_path().stat().st_size <= 10 * 1024 * 1024
    with safe_open(str(demo.checkpoint_path()), "pt") as weights:
        dtypes = {weights.get_tensor(name).dtype for name in weights.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes


def test_held_out_zero_shot_accuracy_is_at_least_90_percent(committed):
    model, preprocess, tokenizer = committed
    assert zero_shot_accuracy(model, preprocess, tokenizer, n=240, seed=123) >= 0.90


@pytest.mark.parametrize("color, shape", [("red", "circle"), ("blue", "square"), ("yellow", "star")])
def test_a_shape_is_nearest_its_own_caption(committed, color, shape):
    model, preprocess, tokenizer = committed
    captions = all_captions()
    with torch.no_grad():
        texts = model.encode_text(tokenizer(captions), normalize=True)
        image = draw_shape(color, shape, np.random.default_rng(99), size=(200, 150))
        vector = model.encode_image(preprocess(image).unsqueeze(0), normalize=True)
    assert captions[int((vector @ texts.T).argmax())] == caption(color, shape)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_training_is_deterministic(tmp_path):
    first = train(tmp_path / "a", steps=6, seed=0, log_every=0)
    second = train(tmp_path / "b", steps=6, seed=0, log_every=0)
    other = train(tmp_path / "c", steps=6, seed=1, log_every=0)
    assert digest(first) == digest(second)
    assert digest(first) != digest(other)
