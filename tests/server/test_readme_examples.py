"""The CLIP curl examples of the README and docs/ work as printed against a real server."""

import json

import pytest

from tests.readme_examples import assert_no_error, curl_examples, run_examples

pytestmark = pytest.mark.integration


def test_readme_clip_examples_work_as_printed(clip_service, tmp_path):
    assert len(curl_examples(5001)) >= 5
    outputs = run_examples(5001, clip_service.url, tmp_path)
    for command, output in outputs:
        assert_no_error(command, output)
    classify = json.loads(next(out for cmd, out in outputs if "/classify" in cmd))
    assert classify["labels"][0]["label"] == "red circle"  # the demo model knows a red circle


def test_readme_downscale_recipe_works_as_printed_and_keeps_the_vector(clip_service, tmp_path):
    """The ImageMagick recipe (docs/api.md, Photos): it uploads a smaller image whose vector is the full upload's."""
    import os
    import subprocess
    import sys

    import numpy as np
    import requests

    from tests.readme_examples import ROOT, code_blocks, page

    block = next(b for b in code_blocks(page("api").read_text(), "bash") if "-resize" in b)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_samples.py"), str(tmp_path)], check=True,
                   capture_output=True)
    # Debian's ImageMagick, ahead of any stand-in `convert` earlier on PATH (this machine has one).
    env = {**os.environ, "PATH": "/usr/bin:" + os.environ["PATH"]}
    result = subprocess.run(["bash", "-ec", block.replace("http://localhost:5001", clip_service.url)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    small = json.loads(result.stdout)["embedding"]
    shrunk = subprocess.run(["bash", "-ec", block.split("| curl")[0].replace("http://localhost:5001", clip_service.url)
                             + "> small.jpg"], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    small_bytes, photo_bytes = ((tmp_path / name).stat().st_size for name in ("small.jpg", "photo.jpg"))
    assert shrunk.returncode == 0 and 0 < small_bytes < photo_bytes
    full = requests.post(clip_service.url + "/embed", files={"image": (tmp_path / "photo.jpg").read_bytes()},
                         timeout=60).json()["embedding"]
    assert float(np.dot(small, full)) >= 0.99
