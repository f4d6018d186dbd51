"""Cloud Run admission (issue 23): does every process's batcher fill a batch at the deployed concurrency?

Cloud Run sends an instance at most ``--concurrency`` requests at once and holds the rest (or starts
another instance). Under saturating demand that is a closed loop of ``concurrency`` clients, each
sending its next request as soon as the last one answers: what ``drive`` does. The server runs the
deployed shape scaled to this machine: one process per vCPU (``core.capacity.processes_per_instance``
on this machine's CPUs, as gunicorn would start on a GPU instance), the deployed ``WEB_THREADS`` and
``MAX_BATCH_SIZE``, on the simulated L4 (``CLIP_MODEL=sim:...``: real decoding and batching, a
modelled forward behind one instance-wide lock).

Rows: the concurrency the deploy used to set (``WEB_THREADS`` = 32 for the instance); the same
share per process as on an 8-process L4 (32 / 8 = 4 each); ``core.capacity.instance_concurrency``
with the threads unchanged; and with ``batching_threads`` (two batches per process). The mean batch
fill is images per model call / ``MAX_BATCH_SIZE``, counted by the simulator across every process
(``server.backends.sim.read_busy``).

Two GPU timings: ViT-B-32's L4 estimate (3 ms + 0.25 ms/image), which two shared cores cannot keep
busy (the fill then shows what the CPU feeds), and ViT-L-14 on the L4 (6 ms + 4.6 ms/image: 18x
ViT-B-32's 4.4 G multiply-adds per image at the same share of the L4's peak, twice the layers for
the fixed part; ~210 images/s at batch 32), which two cores saturate: the load under which batching
decides throughput. A third table is computed, not measured: the processes an L4 instance gets for
the checkpoints a team may bake (``core.capacity``'s GPU-memory cap).
"""

from __future__ import annotations

import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench.feed_bench import L4_TIMING, make_pngs, warm_up
from bench.harness import Row, drive, interleave, multipart, python, serve
from core.capacity import (
    CUDA_CONTEXT_BYTES,
    GIB,
    GPU_MEMORY_HEADROOM,
    L4_MEMORY_BYTES,
    batching_threads,
    instance_concurrency,
    processes_per_instance,
)
from core.model.cpus import available_cpus
from server.backends.sim import read_busy

WEB_THREADS = 32  # deploy.env.example's CLIP_WEB_THREADS before issue 23
MAX_BATCH_SIZE = 32  # deploy.env.example's CLIP_MAX_BATCH_SIZE
L4_VCPUS = 8
L4_PROCESSES = processes_per_instance(vcpus=L4_VCPUS, gpus=1, processes_per_gpu=None)
VIT_L_14_ON_L4 = {"SIM_BATCH_BASE_MS": "6.0", "SIM_PER_ITEM_MS": "4.6"}
# Checkpoints on disk (approximate published sizes), for the computed process-count table.
CHECKPOINTS = (("ViT-B-32 (openai, fp16)", 0.35e9), ("ViT-L-14 (openai, fp16)", 0.89e9),
               ("ViT-H-14 (laion2b, fp32)", 3.94e9), ("ViT-bigG-14 (laion2b, fp32)", 10.2e9))


def admission_run(port: int, bodies: list, lock_path: str, concurrency: int, fills: list[float]):
    """One closed-loop run at ``concurrency`` that notes the mean batch fill across all processes."""
    def run():
        before = read_busy(lock_path)
        result = drive(port, "/embed", bodies, concurrency)
        after = read_busy(lock_path)
        fills.append((after[3] - before[3]) / max(1, after[2] - before[2]) / MAX_BATCH_SIZE)
        return result
    return run


def configurations(processes: int) -> list[tuple[str, int, int]]:
    """(label, WEB_THREADS, concurrency) of each row."""
    share = max(1, WEB_THREADS // L4_PROCESSES)
    threads_after = batching_threads(MAX_BATCH_SIZE)
    return [
        (f"before: concurrency = WEB_THREADS = {WEB_THREADS}", WEB_THREADS, WEB_THREADS),
        (f"before, at the L4's share: {share} per process x {processes}", WEB_THREADS, share * processes),
        (f"formula, threads unchanged: {processes} x min({WEB_THREADS}, 2 x {MAX_BATCH_SIZE})", WEB_THREADS,
         instance_concurrency(processes, WEB_THREADS, MAX_BATCH_SIZE)),
        (f"after: WEB_THREADS {threads_after}, {processes} x min({threads_after}, 2 x {MAX_BATCH_SIZE})",
         threads_after, instance_concurrency(processes, threads_after, MAX_BATCH_SIZE)),
    ]


def measured(title: str, model: str, timing: dict, processes: int, bodies: list, repeats: int) -> str:
    """One GPU timing: a server per thread count, every row measured round-robin; the markdown table."""
    rows: list[tuple[Row, int, list[float]]] = []
    with ExitStack() as stack:
        runs = []
        servers: dict[int, tuple[int, str]] = {}
        for label, threads, concurrency in configurations(processes):
            if threads not in servers:
                lock = str(Path(tempfile.mkdtemp()) / "sim.lock")
                env = {"CLIP_MODEL": model, "SIM_LOCK_PATH": lock, "WEB_WORKERS": str(processes),
                       "WEB_THREADS": str(threads), "MAX_BATCH_SIZE": str(MAX_BATCH_SIZE), "MAX_QUEUE": "1024",
                       **timing}
                port, _ = stack.enter_context(serve([python(), "-m", "server"], env,
                                                    f"admission-{timing['SIM_PER_ITEM_MS']}ms-{threads}t"))
                warm_up(port, bodies[:128])
                servers[threads] = (port, lock)
            port, lock = servers[threads]
            row, fills = Row(label), []
            rows.append((row, concurrency, fills))
            runs.append((row, admission_run(port, bodies, lock, concurrency, fills)))
        interleave(repeats, runs)
    baseline = rows[0][0]
    lines = [f"#### Cloud Run admission, {title}: {processes} processes, MAX_BATCH_SIZE {MAX_BATCH_SIZE}, "
             "224-px PNGs, one per request", "",
             "| configuration | requests in flight | mean batch fill | images/s (median) | vs before | p50 ms "
             "| p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row, concurrency, fills in rows:
        lines.append(f"| {row.label} | {concurrency} | {statistics.median(fills):.2f} | {row.rate:.1f} | "
                     f"{row.rate / baseline.rate:.2f}x | {row.percentile(50) * 1000:.0f} | "
                     f"{row.percentile(99) * 1000:.0f} |")
    return "\n".join(lines)


def processes_on_an_l4() -> str:
    """The computed table: processes and concurrency of a CLIP instance on an L4 per checkpoint size."""
    lines = [f"#### Processes on an L4 ({L4_VCPUS} vCPU, {L4_MEMORY_BYTES / GIB:.1f} GiB) by checkpoint "
             f"(computed by `core.capacity`, {CUDA_CONTEXT_BYTES / GIB:.0f} GiB context each, "
             f"{GPU_MEMORY_HEADROOM:.0%} headroom)", "",
             "| checkpoint | size on disk | processes (vCPUs alone: 8) | concurrency (WEB_THREADS 64, batch 32) |",
             "|---|---:|---:|---:|"]
    for name, size in CHECKPOINTS:
        processes = processes_per_instance(L4_VCPUS, 1, None, L4_MEMORY_BYTES, int(size))
        lines.append(f"| {name} | {size / 1e9:.2f} GB | {processes} | "
                     f"{instance_concurrency(processes, batching_threads(MAX_BATCH_SIZE), MAX_BATCH_SIZE)} |")
    return "\n".join(lines)


def run(repeats: int = 3, requests: int = 1024) -> str:
    """Fill and throughput before and after at both GPU timings, and the computed process counts."""
    processes = processes_per_instance(vcpus=available_cpus(), gpus=1, processes_per_gpu=None)
    pngs = make_pngs(64)
    bodies = [multipart("image", "photo.png", pngs[n % len(pngs)]) for n in range(requests)]
    return "\n\n".join([
        measured("ViT-B-32's L4 timing (3 ms + 0.25 ms/image; CPU-bound here)", "sim:ViT-B-32", L4_TIMING,
                 processes, bodies, repeats),
        measured("ViT-L-14 on an L4 (6 ms + 4.6 ms/image; GPU-bound)", "sim:ViT-L-14", VIT_L_14_ON_L4,
                 processes, bodies, repeats),
        processes_on_an_l4()])
