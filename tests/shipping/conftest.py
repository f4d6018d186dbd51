"""Fixtures of the shipping tests (images, compose, Cloud Build, deploy script)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def api_key_file(tmp_path: Path) -> Path:
    """An API key file as the deploy script wants it: no trailing newline."""
    path = tmp_path / "api-key.txt"
    path.write_text("0123456789abcdef")
    return path


@pytest.fixture
def bake_env(monkeypatch, tmp_path):
    """No bake variable from the caller's shell, weights under tmp_path/models; restored afterwards
    (the bakes' main() writes its options into os.environ)."""
    for name in ("CLIP_MODEL", "CLIP_PRETRAINED", "WHISPER_MODEL", "BAKE_FROM", "BAKE_ALLOW_UNPINNED",
                 "BAKE_REQUIRE_PINNED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "models"))
    return monkeypatch
