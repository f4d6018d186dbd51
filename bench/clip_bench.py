"""CLIP benchmark: bare model vs this server vs a naive server, ViT-B-32 (random weights) on CPU.

(a) the bare model in-process on preprocessed tensors at its best batch size (the ceiling);
(b) this server over HTTP at concurrency 1, 8 and 32 (`python -m server`, real gunicorn);
(c) a naive server (bench/naive_clip_server.py): one request at a time, full decode, batch 1.
Inputs: 224-px JPEGs and 12 MP photo-like JPEGs (4000x3000). Random weights give the real
compute of ViT-B-32 without a download.
"""

from __future__ import annotations

import statistics

from bench.harness import Row, RssSampler, drive, multipart, python, repeat, run_bare, serve, table, target
from tests.media import encode, photo_like

CONCURRENCY = (1, 8, 32)
SERVER_ENV = {"WEB_THREADS": "40", "MAX_QUEUE": "512"}


def make_inputs(n_small: int, n_large: int) -> dict[str, list[bytes]]:
    """Distinct photo-like JPEGs: small ones at 224 px, large ones at 12 MP."""
    return {
        "224px": [encode(photo_like(224, 224, seed=n), "JPEG", quality=90) for n in range(n_small)],
        "12MP": [encode(photo_like(4000, 3000, seed=n), "JPEG", quality=90) for n in range(n_large)],
    }


def bare_model(repeats: int) -> Row:
    """Forward-only throughput of ViT-B-32 on preprocessed tensors at its best batch size."""
    rates, peak_mb = run_bare("clip", {"repeats": repeats})
    for batch, values in rates.items():
        print(f"  bare batch {batch}: {statistics.median(values):.2f} images/s", flush=True)
    best = max(rates, key=lambda batch: statistics.median(rates[batch]))
    return Row(f"(a) bare model, batch {best}", rates=rates[best], peak_mb=peak_mb)


def over_http(name: str, argv: list[str], env: dict, inputs: dict[str, list[bytes]], repeats: int,
              levels: dict[str, tuple[int, ...]]) -> dict[str, list[Row]]:
    """Rows per input kind for one server at the given concurrency levels."""
    rows: dict[str, list[Row]] = {kind: [] for kind in inputs}
    with serve(argv, env, name) as (port, pid):
        bodies = {kind: [multipart("image", "photo.jpg", data) for data in images]
                  for kind, images in inputs.items()}
        for kind in inputs:
            drive(port, "/embed", bodies[kind][:4], 4)  # warm-up: connections, allocator, caches
            for concurrency in levels[kind]:
                row = Row(f"{name}, concurrency {concurrency}")
                with RssSampler(pid) as rss:
                    repeat(repeats, lambda k=kind, c=concurrency: drive(port, "/embed", bodies[k], c), row)
                row.peak_mb = rss.peak_mb
                print(f"  {name} {kind} c={concurrency}: {row.rate:.2f} images/s", flush=True)
                rows[kind].append(row)
    return rows


def run(repeats: int = 3) -> str:
    """Run everything side by side; returns the markdown tables."""
    inputs = make_inputs(n_small=64, n_large=24)
    print("CLIP (a) bare model", flush=True)
    bare = bare_model(repeats)
    print("CLIP (b) this server", flush=True)
    server = over_http("(b) server", [python(), "-m", "server", "--model", "ViT-B-32", "--pretrained", "random"],
                       SERVER_ENV, inputs, repeats, {"224px": CONCURRENCY, "12MP": CONCURRENCY})
    print("CLIP (c) naive server", flush=True)
    naive = over_http("(c) naive", [python(), "-m", "gunicorn", "-w", "1", "-k", "sync", "--timeout", "600",
                                    "-b", "127.0.0.1:{port}", "bench.naive_clip_server:app"], {}, inputs, repeats,
                      {"224px": (1, 8), "12MP": (1, 8)})
    out = []
    for kind in inputs:
        out.append(table(f"CLIP ViT-B-32, {kind} JPEGs, one image per request", "images/s",
                         [bare] + server[kind] + naive[kind], bare))
    server_32 = next(r for r in server["224px"] if r.label.endswith("concurrency 32"))
    server_8 = next(r for r in server["12MP"] if r.label.endswith("concurrency 8"))
    naive_8 = next(r for r in naive["12MP"] if r.label.endswith("concurrency 8"))
    out.append("\n".join([
        target("server at concurrency 32 / bare model, 224-px images", server_32.rate / bare.rate, 0.85),
        target("server / naive server at concurrency 8, 12 MP JPEGs", server_8.rate / naive_8.rate, 2.0),
    ]))
    return "\n\n".join(out)
