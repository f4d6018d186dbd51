"""The TypeScript client's downscaling (sharp) against real servers: the vector stays, the upload shrinks.

``clients/typescript/test/downscale.mjs`` embeds every test image twice, as it is and downscaled, and
reports the vectors, the bytes each request carried and what ``prepareImage`` made of the image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import ExitStack

import numpy as np
import pytest
from PIL import Image, ImageOps

from server.images import ImageSpec, decode_image
from tests.clients.conftest import API_KEY, QUICK_STOP, start_together
from tests.clients.photos import sample_images
from tests.conftest import ROOT, run_service

PACKAGE = ROOT / "clients" / "typescript"
PIXELS = 10 ** 8
needs_sharp = pytest.mark.skipif(
    not (PACKAGE / "node_modules" / "sharp").is_dir(),
    reason="sharp is not installed for the TypeScript client: run `npm ci --prefix clients/typescript`",
)


def upright_size(path) -> tuple[int, int]:
    return ImageOps.exif_transpose(Image.open(path)).size


def is_small(path, preprocessing) -> bool:
    """Already at or under the published short side (the demo model's is smaller than ViT-B-32's 224)."""
    return min(upright_size(path)) <= preprocessing["max_useful_size"]["short_side"]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ts-downscale-images")
    for name, data in sample_images().items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The demo model and real ViT-B-32 (random weights), both behind the API key, started together."""
    demo = {"CLIP_MODEL": "demo", "WEB_THREADS": "4", "API_KEY": API_KEY, **QUICK_STOP}
    vit = {"CLIP_MODEL": "ViT-B-32", "CLIP_PRETRAINED": "random", "WEB_THREADS": "4", "API_KEY": API_KEY,
           **QUICK_STOP}
    with ExitStack() as stack:
        running = start_together(stack, [run_service("server", env, tmp_path_factory.mktemp("ts-downscale"))
                                         for env in (demo, vit)])
        yield dict(zip(("demo", "vit"), running))


def run_script(server, image_dir, out_dir=None, client_module=None) -> dict:
    node = shutil.which("node")
    assert node, "Node.js 18+ is required for this test: run `make setup` (scripts/install-system-deps.sh)"
    env = {**os.environ, "CLIP_SERVER_URL": server.url, "CLIP_SERVER_API_KEY": API_KEY}
    args = [node, "test/downscale.mjs", str(image_dir), str(out_dir or "")]
    if client_module:
        args.append(str(client_module))
    result = subprocess.run(args, cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    """What prepareImage made of each test image under ViT-B-32's preprocessing."""
    return tmp_path_factory.mktemp("ts-downscale-prepared")


@pytest.fixture(scope="module")
def reports(servers, image_dir, prepared_dir):
    return {"demo": run_script(servers["demo"], image_dir), "vit": run_script(servers["vit"], image_dir, prepared_dir)}


@needs_sharp
@pytest.mark.integration
@pytest.mark.parametrize("which", ["demo", "vit"])
def test_downscaled_uploads_embed_like_the_full_upload(which, reports, image_dir):
    """cosine >= 0.99 on every test image; large ones travel smaller, small ones as they are."""
    report = reports[which]
    small = [name for name in report["images"] if is_small(image_dir / name, report["preprocessing"])]
    assert len(small) == (2 if which == "vit" else 0)  # small.jpg and small-short-side.png under 224 px
    assert report["preprocessing"]["resize"] == "shortest_side"
    assert report["modelsRequests"] == 1  # the preprocessing is read once per client, not per upload
    cosines = {name: float(np.dot(item["full"], item["small"])) for name, item in report["images"].items()}
    assert min(cosines.values()) >= 0.99, cosines
    for name, item in report["images"].items():
        assert item["fullUpload"] == item["original"], name  # resize: false sends the original bytes
        if name in small:
            assert item["unchanged"] and item["smallUpload"] == item["original"], name  # never upscaled
        else:
            # One bit per pixel packs well in PNG; everything else shrinks at least threefold.
            assert item["smallUpload"] < item["original"] / (1.5 if name == "one-bit.png" else 3), name


@needs_sharp
@pytest.mark.integration
def test_prepared_images_are_upright_jpegs_cut_where_the_server_cuts(reports, image_dir):
    """The server's own centre crop (resize size = input size, as CLIP's): a square of the input size.

    No orientation tag is left, or the server would turn the image again (that its pixels were
    turned is the next test's check). Without the crop (resize 256, crop 224), the whole resized
    image goes: the node tests check ``targetSize`` and ``centreCropBox`` for that case.
    """
    report = reports["vit"]
    preprocessing = report["preprocessing"]
    assert preprocessing["resize_size"] == preprocessing["input_size"] == 224 and preprocessing["crop"] == "center"
    for name, item in report["images"].items():
        if is_small(image_dir / name, preprocessing):
            continue
        assert item["size"] == [224, 224] and item["format"] == "jpeg" and not item["orientation"], (name, item)


@needs_sharp
@pytest.mark.integration
def test_each_prepared_image_reaches_the_model_as_the_full_upload_would(reports, image_dir, prepared_dir):
    """The server's input array from the prepared upload is the full upload's, to JPEG noise.

    Normalised units (std ~0.27): 0.05 is ~3.5 grey levels on average; alpha over black instead of
    white, a missed rotation or CMYK through a print profile is 0.1-1.0 (the vectors may not show it:
    random weights are forgiving).
    """
    spec = ImageSpec(size=224, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
    assert reports["vit"]["preprocessing"] == spec.published()
    differences = {}
    for name in reports["vit"]["images"]:
        full = decode_image((image_dir / name).read_bytes(), spec, PIXELS)
        prepared = decode_image((prepared_dir / name).read_bytes(), spec, PIXELS)
        differences[name] = float(np.abs(full - prepared).mean())
    assert max(differences.values()) < 0.05, differences


@pytest.mark.integration
def test_without_sharp_the_original_bytes_go(servers, image_dir, tmp_path):
    """A copy of the client where `import("sharp")` fails: every image goes as it is, and nothing breaks."""
    shutil.copy(PACKAGE / "index.js", tmp_path / "index.js")  # no node_modules above tmp_path
    report = run_script(servers["demo"], image_dir, client_module=tmp_path / "index.js")
    for name, item in report["images"].items():
        assert item["unchanged"] and item["smallUpload"] == item["fullUpload"] == item["original"], name
        assert float(np.dot(item["full"], item["small"])) > 0.9999, name
