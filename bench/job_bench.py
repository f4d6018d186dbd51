"""Batch-job benchmark: `python -m server.job` against the bare model and against the HTTP server.

(a) the bare model in its own process on preprocessed tensors at its best batch size (the ceiling);
(b) the CLIP job on a folder of 224-px JPEGs, and on a folder of 12 MP JPEGs (decode-bound);
(c) this HTTP server at concurrency 8 on the same 12 MP JPEGs (what a client looping over the
folder would get). ViT-B-32 with random weights; the job's own rate is read from its final
progress line (timed from model ready to the last shard write, so model loading is excluded).
(d) the ceiling of any job on this machine for the 12 MP folder: when the model and the decoding
share the same cores, an image costs the bare model's time plus its decode time spread over the
cores, 1 / (1/bare + 1/(cores x one-thread decode rate)); both rates are measured in this run.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.harness import ROOT, Row, drive, interleave, multipart, python, run_bare, serve, table, target
from tests.media import encode, photo_like

MODEL_ENV = {"CLIP_MODEL": "ViT-B-32", "CLIP_PRETRAINED": "random"}


def job_rate(source: Path, scratch: Path) -> float:
    """Images/s of one fresh job run (task 0 of 1) over ``source``."""
    output = scratch / "out"
    shutil.rmtree(output, ignore_errors=True)
    env = {**os.environ, **MODEL_ENV, "LOG_LEVEL": "WARNING"}
    result = subprocess.run([python(), "-m", "server.job", "--input", str(source), "--output", str(output)],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stderr.strip().splitlines()[-1])["images_per_s"]


def run(repeats: int = 3) -> str:
    """Job vs bare model (224 px) and job vs HTTP server (12 MP), round-robin; markdown tables."""
    scratch = Path(tempfile.mkdtemp(prefix="job-bench-"))
    folders = {"224px": (scratch / "224px", 128, 224, 224), "12MP": (scratch / "12MP", 24, 4000, 3000)}
    for folder, count, width, height in folders.values():
        folder.mkdir()
        for n in range(count):
            (folder / f"{n:04d}.jpg").write_bytes(encode(photo_like(width, height, seed=n), "JPEG", quality=90))
    large = [(folders["12MP"][0] / f"{n:04d}.jpg").read_bytes() for n in range(folders["12MP"][1])]
    bodies = [multipart("image", "photo.jpg", data) for data in large]
    bare_rates: dict[str, list[float]] = {}
    decode_rates: list[float] = []

    def bare_round() -> float:
        rates, _ = run_bare("clip", {"repeats": 1})
        for batch, values in rates.items():
            bare_rates.setdefault(batch, []).extend(values)
        return max(values[0] for values in rates.values())

    def decode_round() -> float:
        rates, _ = run_bare("decode", {"repeats": 1, "n_images": 8})
        decode_rates.extend(rates["fast"])
        return rates["fast"][0]

    rows = {"job224": Row("(b) job, 224-px folder"), "job12": Row("(b) job, 12 MP folder"),
            "http12": Row("(c) HTTP server, concurrency 8, 12 MP")}
    server_argv = [python(), "-m", "server", "--model", "ViT-B-32", "--pretrained", "random"]
    try:
        with serve(server_argv, {"WEB_THREADS": "16"}, "clip-server-job-bench") as (port, _pid):
            drive(port, "/embed", bodies[:4], 4)  # warm-up
            interleave(repeats, [
                (Row("(a) bare model"), bare_round),
                (Row("one-thread decode"), decode_round),
                (rows["job224"], lambda: job_rate(folders["224px"][0], scratch)),
                (rows["job12"], lambda: job_rate(folders["12MP"][0], scratch)),
                (rows["http12"], lambda: drive(port, "/embed", bodies, 8)),
            ])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    best = max(bare_rates, key=lambda batch: statistics.median(bare_rates[batch]))
    bare = Row(f"(a) bare model, batch {best}", rates=bare_rates[best])
    cores = len(os.sched_getaffinity(0))
    decode_rate = statistics.median(decode_rates)
    ceiling = Row(f"(d) ceiling here: model + decode ({decode_rate:.1f}/s a thread) on {cores} cores",
                  rates=[1 / (1 / bare.rate + 1 / (cores * decode_rate))])
    return "\n\n".join([
        table("CLIP batch job (python -m server.job), ViT-B-32, 224-px JPEG folder", "images/s",
              [bare, rows["job224"]], bare),
        table("CLIP batch job vs HTTP server, 12 MP JPEG folder", "images/s",
              [rows["http12"], rows["job12"], ceiling], rows["http12"]),
        "\n".join([
            target("job / bare model at its best batch, 224-px JPEGs", rows["job224"].rate / bare.rate, 0.9),
            target("job / HTTP server at concurrency 8, 12 MP JPEGs", rows["job12"].rate / rows["http12"].rate, 1.5),
            f"- job / its ceiling here (d), 12 MP JPEGs: {rows['job12'].rate / ceiling.rate:.2f}x; "
            f"the best any job could do here is {ceiling.rate / rows['http12'].rate:.2f}x the HTTP server",
        ]),
    ])
