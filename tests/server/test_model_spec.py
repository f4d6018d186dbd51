"""Which model a configuration names, as the images set it (build arguments become ENV)."""

from __future__ import annotations

import pytest

from server.models import resolve_spec
from server.settings import ServerSettings

pytestmark = pytest.mark.unit


def spec(monkeypatch, **env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return resolve_spec(ServerSettings.from_env())


def test_the_demo_ignores_a_weights_tag_such_as_the_dockerfiles_default(monkeypatch):
    # docker build --build-arg CLIP_MODEL=demo keeps CLIP_PRETRAINED=openai: the image served
    # nothing (open_clip looked for a checkpoint file named "openai").
    assert spec(monkeypatch, CLIP_MODEL="demo", CLIP_PRETRAINED="openai").pretrained is None


def test_the_demo_keeps_a_local_checkpoint(monkeypatch):
    assert spec(monkeypatch, CLIP_MODEL="demo", CLIP_PRETRAINED="/models/clip/ft/ft.pt").pretrained == \
        "/models/clip/ft/ft.pt"
