"""CLIP benchmark: bare model vs this server vs a naive server, ViT-B-32 (random weights) on CPU.

(a) the bare model in its own process on preprocessed tensors at its best batch size (the ceiling);
(b) this server over HTTP at concurrency 1, 8 and 32 (`python -m server`, real gunicorn);
(c) a naive server (bench/naive_clip_server.py): one request at a time, full decode, batch 1.
Inputs: 224-px JPEGs and 12 MP photo-like JPEGs (4000x3000). Random weights give the real
compute of ViT-B-32 without a download.
"""

from __future__ import annotations

import statistics
from contextlib import ExitStack

from bench.harness import Row, RssSampler, drive, interleave, multipart, python, run_bare, serve, table, target
from tests.media import encode, photo_like

CONCURRENCY = (1, 8, 32)
SERVER_ENV = {"WEB_THREADS": "40", "MAX_QUEUE": "512"}


def make_inputs(n_small: int, n_large: int) -> dict[str, list[bytes]]:
    """Distinct photo-like JPEGs: small ones at 224 px, large ones at 12 MP."""
    return {
        "224px": [encode(photo_like(224, 224, seed=n), "JPEG", quality=90) for n in range(n_small)],
        "12MP": [encode(photo_like(4000, 3000, seed=n), "JPEG", quality=90) for n in range(n_large)],
    }


def run(repeats: int = 3) -> str:
    """Run everything side by side, round-robin; returns the markdown tables."""
    inputs = make_inputs(n_small=64, n_large=24)
    bodies = {kind: [multipart("image", "photo.jpg", data) for data in images] for kind, images in inputs.items()}
    bare_rates: dict[str, list[float]] = {}
    bare_peak = [0.0]
    decode_rows = {"reference": Row("reference: full decode + open_clip's torchvision transform"),
                   "fast": Row("this server: draft-mode decode + crop-box resample")}

    def bare_round() -> float:
        rates, peak_mb = run_bare("clip", {"repeats": 1})
        bare_peak[0] = max(bare_peak[0], peak_mb)
        for batch, values in rates.items():
            bare_rates.setdefault(batch, []).extend(values)
        return max(values[0] for values in rates.values())

    def decode_round() -> float:
        rates, _ = run_bare("decode", {"repeats": 1})
        for name, values in rates.items():
            decode_rows[name].rates.extend(values)
        return rates["fast"][0] / rates["reference"][0]

    server_argv = [python(), "-m", "server", "--model", "ViT-B-32", "--pretrained", "random"]
    naive_argv = [python(), "-m", "gunicorn", "-w", "1", "-k", "sync", "--timeout", "600", "-b", "127.0.0.1:{port}",
                  "bench.naive_clip_server:app"]
    with ExitStack() as stack:
        server_port, server_pid = stack.enter_context(serve(server_argv, SERVER_ENV, "clip-server"))
        naive_port, naive_pid = stack.enter_context(serve(naive_argv, {}, "clip-naive"))
        server_rss = stack.enter_context(RssSampler(server_pid))
        naive_rss = stack.enter_context(RssSampler(naive_pid))
        for port in (server_port, naive_port):
            for kind in inputs:
                drive(port, "/embed", bodies[kind][:4], 4)  # warm-up: connections, allocator, caches
        runs = [(Row("(a) bare model"), bare_round), (Row("decode speed-up"), decode_round)]
        rows: dict[str, list[Row]] = {kind: [] for kind in inputs}
        for kind in inputs:
            for name, port, levels in (("(b) server", server_port, CONCURRENCY), ("(c) naive", naive_port, (1, 8))):
                for concurrency in levels:
                    row = Row(f"{name}, concurrency {concurrency}")
                    rows[kind].append(row)
                    runs.append((row, lambda p=port, k=kind, c=concurrency: drive(p, "/embed", bodies[k], c)))
        interleave(repeats, runs)
        for kind_rows in rows.values():
            for row in kind_rows:
                row.peak_mb = (server_rss if row.label.startswith("(b)") else naive_rss).peak_mb
    best = max(bare_rates, key=lambda batch: statistics.median(bare_rates[batch]))
    bare = Row(f"(a) bare model, batch {best}", rates=bare_rates[best], peak_mb=bare_peak[0])
    out = []
    for kind in inputs:
        out.append(table(f"CLIP ViT-B-32, {kind} JPEGs, one image per request", "images/s",
                         [bare] + rows[kind], bare))
    out.append(table("Decoding a 12 MP JPEG into the model's input, one thread", "images/s",
                     [decode_rows["reference"], decode_rows["fast"]], decode_rows["reference"]))
    server_32 = next(r for r in rows["224px"] if r.label == "(b) server, concurrency 32")
    server_8 = next(r for r in rows["12MP"] if r.label == "(b) server, concurrency 8")
    naive_8 = next(r for r in rows["12MP"] if r.label == "(c) naive, concurrency 8")
    out.append("\n".join([
        "Bare model by batch size (images/s, median): "
        + ", ".join(f"{batch}: {statistics.median(values):.2f}" for batch, values in bare_rates.items()),
        "",
        target("server at concurrency 32 / bare model, 224-px images", server_32.rate / bare.rate, 0.85),
        target("server / naive server at concurrency 8, 12 MP JPEGs", server_8.rate / naive_8.rate, 2.0),
    ]))
    return "\n\n".join(out)
