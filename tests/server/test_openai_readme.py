"""docs/api.md's OpenAI SDK snippet for the CLIP server runs as printed (only the host:port changes)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from server.demo.shapes import draw_shape
from tests.conftest import ROOT
from tests.readme_examples import code_blocks, page

pytestmark = pytest.mark.integration


def python_snippet(port: int) -> str:
    """docs/api.md's one ```python block that talks to ``localhost:port/v1``."""
    blocks = code_blocks(page("api").read_text(), "python")
    found = [block for block in blocks if f"http://localhost:{port}/v1" in block]
    assert len(found) == 1, f"expected one python block for port {port}, found {len(found)}"
    return found[0]


def run_snippet(port: int, service_url: str, workdir, samples: bool = True) -> str:
    """Run the snippet with ``python`` in ``workdir``, after `make samples` there unless told not to."""
    if samples:
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_samples.py"), str(workdir)], check=True,
                       capture_output=True)
    code = python_snippet(port).replace(f"http://localhost:{port}", service_url)
    result = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_readme_clip_sdk_snippet_runs_as_printed(clip_service, tmp_path):
    # photo.jpg as `make samples` draws it (the speech half of make samples is not needed here).
    draw_shape("red", "circle", np.random.default_rng(7), size=(640, 480)).save(tmp_path / "photo.jpg", quality=92)
    dim, cosine = run_snippet(5001, clip_service.url, tmp_path, samples=False).split()
    assert int(dim) == 64 and float(cosine) > 0.2  # the demo model matches the red circle to its caption
