"""`pip install ./clients/python` in a fresh venv, as a user types it: photos are downscaled as installed.

No package registry here (and none in CI's sandbox): pip resolves the client's dependencies from a
local wheelhouse repacked from what `make setup` installed (``--no-index --find-links``). A
dependency missing from clients/python/pyproject.toml is then missing from the venv, as it would
be for a user.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.media import encode, photo_like

pytestmark = pytest.mark.integration
# The client's dependency tree, and setuptools for its build backend (pip's build isolation).
WHEELHOUSE = ("requests", "charset-normalizer", "idna", "urllib3", "certifi", "pillow", "setuptools")
# What a CLIP server with a 224 px model publishes in GET /v1/models (server.images.ImageSpec.published).
PREPROCESSING = {"input_size": 224, "resize": "shortest_side", "resize_size": 224, "filter": "bicubic",
                 "crop": "center", "max_useful_size": {"short_side": 224}}
DOWNSCALE = """
import json, sys, warnings
from inference_client import images
warnings.simplefilter("error")  # the missing-Pillow warning would fail here
data = open(sys.argv[1], "rb").read()
name, sent = images.prepare("photo.jpg", data, json.loads(sys.argv[2]))
print(json.dumps({"name": name, "bytes": len(sent)}))
"""


def repack(name: str, wheelhouse: Path) -> None:
    """The installed distribution ``name`` as a wheel again (its RECORD's files inside site-packages)."""
    dist = importlib.metadata.distribution(name)
    tag = re.search(r"^Tag: (\S+)$", dist.read_text("WHEEL"), re.M).group(1)
    project = re.sub(r"[-.]+", "_", dist.metadata["Name"])
    with zipfile.ZipFile(wheelhouse / f"{project}-{dist.version}-{tag}.whl", "w", zipfile.ZIP_STORED) as wheel:
        for file in dist.files:
            path = str(file)
            if path.startswith("..") or "__pycache__" in path or path.endswith(("INSTALLER", "REQUESTED",
                                                                               "direct_url.json")):
                continue  # console scripts live outside site-packages; pip writes its own markers
            wheel.write(dist.locate_file(file), path)


@pytest.mark.slow
def test_plain_pip_install_downscales_a_12_megapixel_photo(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    for name in WHEELHOUSE:
        repack(name, wheelhouse)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([python, "-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse),
                              "--disable-pip-version-check", str(ROOT / "clients" / "python")],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(encode(photo_like(4000, 3000, seed=12), "JPEG", quality=92))  # a 12 MP phone photo
    run = subprocess.run([python, "-c", DOWNSCALE, str(photo), json.dumps(PREPROCESSING)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    sent = json.loads(run.stdout)
    assert sent["name"] == "photo.jpg" and sent["bytes"] < photo.stat().st_size / 50, sent
