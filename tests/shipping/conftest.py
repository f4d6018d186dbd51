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
