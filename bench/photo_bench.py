"""Photos: 12 MP JPEGs through the Python client, downscaled before upload or sent whole (`bench photos`).

One client process (this one, 8 threads) against one server (`CLIP_MODEL=sim:ViT-B-32`: the real
CPU side, a modelled L4), both on this machine. Two photos: a detailed, entropy-heavy 12 MP JPEG
of about 5 MB (fine texture everywhere, like a phone's photo of a busy scene) and a synthetic one
(smooth colour field, light texture). Per photo: bytes uploaded, client CPU (this process), server
CPU (gunicorn's whole process tree), photos/s end to end. Then the server's fast path: CPU per
request for an upload already at the published size, beside a 224-px PNG.

Read the end-to-end column with care: client and server share this machine's two cores, and the
client's draft decode is the same entropy decode the server would have done, so moving it from
one to the other cannot speed up both together. What downscaling changes is where that CPU is
spent: on the sender, not on the GPU instance, whose CPU is what caps an L4 (server photos/s per
vCPU, and the cost per million photos below).
"""

from __future__ import annotations

import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from inference_client import ClipClient
from PIL import Image

from bench.feed_bench import server_cpu_s
from bench.harness import drive, multipart, python, serve
from tests.media import encode, photo_like

THREADS = 8
PHOTOS = 24  # per configuration and round
# Cloud Run, us-central1, no zonal redundancy: L4 + 8 vCPU + 32 GiB per second
# (docs/performance.md, "What an embedding costs").
INSTANCE_USD_PER_S = 0.0001867 + 8 * 0.000018 + 32 * 0.000002
VCPUS, CPU_USE = 8, 0.9  # an L4 instance's vCPUs, and the share of them a busy server keeps busy (bench feed)


def detailed_photo(seed: int = 0, width: int = 4032, height: int = 3024) -> bytes:
    """About 5 MB: a colour field with strong fine texture, JPEG quality 85 (entropy-heavy, like a busy scene)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    field += rng.integers(-40, 41, (height, width, 3), dtype=np.int16)
    return encode(Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)), "JPEG", quality=85)


class _Run:
    """One configuration's repeated measurements (per-photo medians)."""

    def __init__(self, label: str, photo: bytes, resize: bool):
        self.label, self.photo, self.resize = label, photo, resize
        self.uploaded: list[int] = []
        self.client_ms: list[float] = []
        self.server_ms: list[float] = []
        self.rates: list[float] = []

    def once(self, client: ClipClient, pids: list[int]) -> None:
        sizes = []

        def one(_):
            name, data = client.prepare(self.photo, "photo.jpg", resize=self.resize)
            sizes.append(len(data))
            client.http.request("POST", "/embed", files=[("image", (name, data))]).json()

        cpu_before, client_before, started = server_cpu_s(pids), time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(one, range(PHOTOS)))
        wall = time.perf_counter() - started
        self.rates.append(PHOTOS / wall)
        self.client_ms.append((time.process_time() - client_before) / PHOTOS * 1000)
        self.server_ms.append((server_cpu_s(pids) - cpu_before) / PHOTOS * 1000)
        self.uploaded.append(statistics.median(sizes))


def _server_cpu_per_request(port: int, pids: list[int], data: bytes, name: str, requests: int = 96) -> float:
    bodies = [multipart("image", name, data)] * requests
    before = server_cpu_s(pids)
    drive(port, "/embed", bodies, THREADS)
    return (server_cpu_s(pids) - before) / requests * 1000


def run(repeats: int = 3) -> str:
    """The photo table and the fast-path table; returns markdown."""
    photos = {"detailed": detailed_photo(), "synthetic": encode(photo_like(4032, 3024, seed=1), "JPEG", quality=90)}
    env = {"CLIP_MODEL": "sim:ViT-B-32", "WEB_THREADS": str(THREADS), "MAX_QUEUE": "1024"}
    with serve([python(), "-m", "server"], env, "photo-sim") as (port, pid):
        client = ClipClient(f"http://127.0.0.1:{port}", "", timeout=600)
        pids = [pid]
        runs = [_Run(f"{kind}, {'downscaled' if resize else 'whole'}", data, resize)
                for kind, data in photos.items() for resize in (False, True)]
        for run_ in runs:  # warm: connections, the preprocessing cache, the server's first batches
            run_.once(client, pids)
            run_.__init__(run_.label, run_.photo, run_.resize)
        for round_number in range(1, repeats + 1):
            for run_ in runs:
                run_.once(client, pids)
                print(f"  round {round_number}: {run_.label}: {run_.rates[-1]:.1f} photos/s", flush=True)
        prepared = client.prepare(photos["detailed"], "photo.jpg")[1]
        png_224 = encode(photo_like(224, 224, seed=2), "PNG")
        prepared_png = io.BytesIO()
        Image.open(io.BytesIO(prepared)).save(prepared_png, "PNG")
        fast = {label: statistics.median(_server_cpu_per_request(port, pids, data, name) for _ in range(repeats))
                for label, data, name in (("224-px PNG (224x224)", png_224, "p.png"),
                                          (f"downscaled photo as the client sends it (JPEG {_size(prepared)})",
                                           prepared, "p.jpg"),
                                          (f"the same pixels as PNG ({_size(prepared_png.getvalue())})",
                                           prepared_png.getvalue(), "p.png"))}
    return _tables(photos, runs, fast)


def _size(data: bytes) -> str:
    width, height = Image.open(io.BytesIO(data)).size
    return f"{width}x{height}, {len(data) / 1000:.0f} KB"


def _tables(photos: dict[str, bytes], runs: list[_Run], fast: dict[str, float]) -> str:
    med = statistics.median
    lines = [f"#### Photos through the Python client, 12 MP JPEGs, simulated L4 (`python -m bench photos`), "
             f"{THREADS} client threads", "",
             f"Photos: detailed {len(photos['detailed']) / 1e6:.1f} MB, synthetic "
             f"{len(photos['synthetic']) / 1e6:.1f} MB (4032x3024). Client and server share this machine's "
             "2 cores.", "",
             "| photo, upload | bytes uploaded | client CPU ms | server CPU ms | photos/s end to end "
             "| server photos/s per vCPU |", "|---|---:|---:|---:|---:|---:|"]
    for run_ in runs:
        lines.append(f"| {run_.label} | {med(run_.uploaded):,.0f} | {med(run_.client_ms):.1f} | "
                     f"{med(run_.server_ms):.1f} | {med(run_.rates):.1f} | {1000 / med(run_.server_ms):.0f} |")
    lines.append("")
    for kind in photos:
        whole, small = (next(r for r in runs if r.label == f"{kind}, {how}") for how in ("whole", "downscaled"))
        lines.append(f"- {kind}: **{med(whole.uploaded) / med(small.uploaded):.0f}x** fewer bytes (target >= 50x); "
                     f"server CPU **{med(small.server_ms):.1f} ms** (target <= 5 ms), "
                     f"{med(whole.server_ms) / med(small.server_ms):.0f}x less; end to end "
                     f"**{med(small.rates) / med(whole.rates):.2f}x** on this shared 2-core machine (target 5x)")
        cost_whole = INSTANCE_USD_PER_S / (VCPUS * CPU_USE * 1000 / med(whole.server_ms)) * 1e6
        cost_small = INSTANCE_USD_PER_S / (VCPUS * CPU_USE * 1000 / med(small.server_ms)) * 1e6
        lines.append(f"  - an L4 instance's CPU-bound cost per million such photos: ${cost_whole:.2f} whole, "
                     f"${cost_small:.2f} downscaled (8 vCPU at 90%, ${INSTANCE_USD_PER_S * 3600:.2f}/h; the GPU "
                     "caps it at ~2,900/s, $0.14)")
    lines += ["", "#### The server's fast path: CPU per request, one image already at the published size", "",
              "| upload | server CPU ms/request (median) |", "|---|---:|"]
    lines += [f"| {label} | {ms:.2f} |" for label, ms in fast.items()]
    return "\n".join(lines)
