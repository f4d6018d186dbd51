"""``python -m bench images``: the built images' size, layers and cold start, beside the same model
process outside the container (needs ``make images``; not part of the default ``make bench``).

Sizes: uncompressed (the layers as tar) and as pushed (gzip, what a registry stores and Cloud Run
pulls), from ``buildah push`` into a local directory, and the application layers alone (COPY core/
and COPY <service>/, what a code-only change re-pushes). Cold start: from starting the container
(or ``python -m <service>`` outside) to its ``ready`` log line, and to the first answered request.
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from bench import containers
from bench.harness import ROOT, free_port

SERVICES = {  # image, package, model env outside, first request
    "CLIP server": (containers.CLIP_IMAGE, "server", {"CLIP_MODEL": "demo"}, "embed"),
    "Whisper worker": (containers.WORKER_IMAGE, "worker", {"WHISPER_MODEL": "tiny.en"}, "transcribe"),
    # Outside, all-MiniLM-L6-v2 is baked first into a scratch MODELS_DIR (run() sets it).
    "Text embeddings": (containers.IMAGES["textembed"], "textembed", {"TEXTEMBED_MODEL": "all-MiniLM-L6-v2"}, "texts"),
}
READY = " ready: model "


def layer_sizes(image: str) -> list[tuple[int, int]]:
    """(uncompressed, gzip) bytes of each layer, bottom first, as ``buildah push`` writes them."""
    with tempfile.TemporaryDirectory(prefix="push-", dir="/var/tmp") as out:
        containers.buildah("push", "--quiet", "--format", "v2s2", "--compression-format", "gzip", image,
                           f"dir:{out}", timeout=1800)
        manifest = json.loads((Path(out) / "manifest.json").read_text())
        sizes = []
        for layer in manifest["layers"]:
            blob = Path(out) / layer["digest"].split(":", 1)[1]
            with gzip.open(blob, "rb") as stream:
                uncompressed = sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 22), b""))
            sizes.append((uncompressed, layer["size"]))
        return sizes


def first_request(url: str, kind: str, sample: Path) -> None:
    if kind == "embed":
        response = requests.post(url + "/embed", files={"image": ("x.png", sample.read_bytes())}, timeout=120)
    elif kind == "texts":
        response = requests.post(url + "/embed", json={"texts": [sample.read_text()]}, timeout=120)
    else:
        response = requests.post(url + "/transcribe", files={"audio": ("a.wav", sample.read_bytes())}, timeout=300)
    response.raise_for_status()


def cold_start_container(image: str, kind: str, sample: Path) -> tuple[float, float]:
    port = free_port()
    with containers.Container(image) as container:
        container.start({"PORT": str(port)})
        ready = container.wait_for_line(READY)
        first_request(f"http://127.0.0.1:{port}", kind, sample)
        return ready, time.monotonic() - container.started_at


def cold_start_outside(package: str, env: dict, kind: str, sample: Path) -> tuple[float, float]:
    port = free_port()
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", package], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **env, "PORT": str(port), "HF_HUB_OFFLINE": "1"},
                                   start_new_session=True)
        try:
            while READY not in Path(log.name).read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() - started > 300:
                    raise RuntimeError(Path(log.name).read_text()[-3000:])
                time.sleep(0.05)
            ready = time.monotonic() - started
            first_request(f"http://127.0.0.1:{port}", kind, sample)
            return ready, time.monotonic() - started
        finally:
            process.terminate()
            process.wait(60)


def samples(directory: Path) -> dict[str, Path]:
    from PIL import Image

    from tests.media import speak

    picture = directory / "x.png"
    Image.fromarray(np.full((224, 224, 3), 128, np.uint8)).save(picture)
    text = directory / "a.txt"
    text.write_text("Please send the report to Maria.")
    return {"embed": picture, "transcribe": speak("Please send the report to Maria.", directory / "a.wav"),
            "texts": text}


def bake_outside(package: str, env: dict, models_dir: Path) -> dict:
    """``env`` with MODELS_DIR set to ``models_dir``, the model baked there by ``python -m PACKAGE.bake``."""
    env = {**env, "MODELS_DIR": str(models_dir)}
    subprocess.run([sys.executable, "-m", f"{package}.bake"], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, **env, "HF_HUB_OFFLINE": "1"}, timeout=600)
    return env


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def run(repeats: int = 3) -> str:
    """The images table (markdown)."""
    missing = [image for image, *_ in SERVICES.values() if not containers.has_image(image)]
    if missing:
        return f"## Images\n\nNot built: {', '.join(missing)}. Run `make images`, then `python -m bench images`."
    rows = ["| | uncompressed | as pushed (gzip) | application layers (gzip) | layers "
            "| to `ready` (s) | to first answer (s) | outside: to `ready` (s) | outside: first answer (s) |",
            "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        sample = samples(Path(tmp))
        for label, (image, package, env, kind) in SERVICES.items():
            sizes = layer_sizes(image)
            inside = [cold_start_container(image, kind, sample[kind]) for _ in range(repeats)]
            if kind == "texts":
                env = bake_outside(package, env, Path(tmp) / "models")
            outside = [cold_start_outside(package, env, kind, sample[kind]) for _ in range(repeats)]
            med = [statistics.median(column) for column in (*zip(*inside), *zip(*outside))]
            app = sum(pushed for _, pushed in sizes[-2:])
            rows.append(f"| {label} (`{image}`) | {gb(sum(u for u, _ in sizes))} | {gb(sum(p for _, p in sizes))} "
                        f"| {app / 1e3:.0f} kB | {len(sizes)} | {med[0]:.1f} | {med[1]:.1f} | {med[2]:.1f} "
                        f"| {med[3]:.1f} |")
    stand_in = containers.buildah("inspect", "--type", "image", "--format",
                                  '{{index .OCIv1.Config.Labels "template.stand-in"}}',
                                  "docker.io/pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime", check=False).stdout
    note = ("Built on the local stand-in base (scripts/build-standins.sh), not the published PyTorch image: "
            "see docs/deploy.md, \"Build and run the images locally\", for how the sizes relate."
            if stand_in.strip() == "true" else "Built on the published base images.")
    return (f"## Images (medians of {repeats} cold starts; CPU, no GPU)\n\n" + "\n".join(rows) + "\n\n" + note)
