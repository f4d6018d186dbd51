"""The design (b) prototype: a request process's batches reach the model process and come back right."""

from __future__ import annotations

import numpy as np
import pytest

from bench.model_process import MODEL_SOCKET_ENV, RemoteClipBackend, model_process
from server.backends.base import IMAGE, TEXT
from server.backends.sim import SimClipBackend, read_busy
from server.models import resolve_spec
from server.settings import ServerSettings
from tests.media import encode, photo_like

pytestmark = pytest.mark.integration


def test_batches_through_the_model_process_give_the_local_vectors(tmp_path, monkeypatch):
    lock = str(tmp_path / "sim.lock")
    env = {"CLIP_MODEL": "sim:ViT-B-32", "SIM_LOCK_PATH": lock, "SIM_BATCH_BASE_MS": "0", "SIM_PER_ITEM_MS": "0"}
    settings = ServerSettings.from_env(env)
    local = SimClipBackend(settings, resolve_spec(settings))
    local.load()
    images = [local.preprocess(IMAGE, encode(photo_like(96, 64, seed=n), "PNG")) for n in range(3)]
    tokens = [local.tokenize(text) for text in ("a cat", "a dog")]
    with model_process(env, "test-model-process") as (socket_path, _):
        monkeypatch.setenv(MODEL_SOCKET_ENV, socket_path)
        remote = RemoteClipBackend(settings, resolve_spec(settings))
        remote.load()
        assert remote.image_spec == local.image_spec and remote.dim == local.dim
        calls_before = read_busy(lock)[2]
        # Two batches in flight before either is read: forward() does not wait for the model.
        pending = [remote.forward(IMAGE, images), remote.forward(TEXT, tokens)]
        got = [[remote.postprocess(kind, out) for out in outputs] for kind, outputs in zip((IMAGE, TEXT), pending)]
        assert read_busy(lock)[2] > calls_before  # the model process's sim forward ran them
    for vectors, (kind, items) in zip(got, ((IMAGE, images), (TEXT, tokens))):
        np.testing.assert_array_equal(np.stack(vectors), np.stack(local.forward(kind, items)))
