"""How many request-handling processes an instance runs, and how many requests Cloud Run may send it.

The two numbers every part of the kit must agree on, computed here and nowhere else: gunicorn
(core/gunicorn_conf.py) starts ``processes_per_instance`` workers, the service spec and the
compose file set ``instance_concurrency`` as the instance's concurrency, and docs/deploy.md
("Processes and concurrency") explains both. Standard library only: the deploy kit calls it
without the services' dependencies (``python -m core.capacity --vcpus 8 --gpus 1 ...``).

- Processes: one per vCPU on a GPU instance for a service that asks for it (the CLIP server: a
  process's Python keeps about one core busy, so one process cannot feed the GPU), a fixed count
  per GPU for one that does not (the Whisper worker: 1). On a CPU-only instance one, or one per
  ``cpus_per_process`` vCPUs for a service that asks for it (a small model, the text-embedding
  service: each process a replica with its share of the cores, core/model/cpus.py). Each process
  holds its own CUDA context and model replica, so the count per GPU is also capped by what fits in
  the GPU's memory: ``(memory x (1 - headroom)) // (weights + context)``.
- Concurrency: Google's GPU guidance sizes it as model instances x (parallel queries + batch
  size). A process is one model instance. While one batch is in its model (the parallel queries:
  up to a batch of requests waiting on it), the next batch must be forming from other requests,
  or the model gets whatever arrived in ``MAX_WAIT_MS``: two batches of requests per process,
  each with a gthread thread to hold it (``batching_threads``). Admitting more than a process has
  threads only queues them inside gunicorn. The old setting, ``WEB_THREADS`` for the instance,
  let 8 processes share 32 requests: about 4 each against batches of 32. The figures are in
  docs/performance.md ("Cloud Run admission").
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

MIB = 1024 * 1024
GIB = 1024 * MIB
# Request-handling processes per GPU, at most. One process keeps at most ~1.3 cores busy (bench feed:
# 257 images/s x 5 ms of CPU each), so an 8-vCPU L4 needs about one per vCPU; past that they only take
# turns on the cores. No GPU here checked it.
MAX_PROCESSES_PER_GPU = 8
# GPU memory a process holds besides its weights: the CUDA context with cuBLAS/cuDNN kernels (about
# 0.3-0.5 GB under CUDA 12's lazy loading) plus PyTorch's cached activations of one batch (ViT-B-32
# at batch 32 in fp16: ~0.1 GB; larger models more). 1 GiB is a round figure above both; measure
# with nvidia-smi on the target GPU and pass --cuda-context-mb to change it.
CUDA_CONTEXT_BYTES = 1 * GIB
# Share of the GPU's memory left unplanned: fragmentation in PyTorch's caching allocator, the
# driver's own reservations, and a request with more inputs than the warm-up had.
GPU_MEMORY_HEADROOM = 0.10
# memory.total of an NVIDIA L4 as nvidia-smi reports it (the datasheet's 24 GB), for the deploy kit,
# which sizes the instance without the GPU in reach.
L4_MEMORY_BYTES = 23034 * MIB
# Batches of requests a process holds at once: one in the model, the next forming.
BATCHES_IN_FLIGHT = 2
# Cloud Run's largest --concurrency.
MAX_CLOUD_RUN_CONCURRENCY = 1000


def processes_per_gpu_that_fit(gpu_memory_bytes: int | None, weights_bytes: int | None,
                               cuda_context_bytes: int = CUDA_CONTEXT_BYTES) -> int | None:
    """Model replicas that fit in one GPU's memory (at least 1), or None when either size is unknown."""
    if not gpu_memory_bytes or weights_bytes is None:
        return None
    usable = gpu_memory_bytes * (1 - GPU_MEMORY_HEADROOM)
    # At least one: a model too large for the GPU fails at load with CUDA's out-of-memory error,
    # which says more than a refusal to start here would.
    return max(1, int(usable // (weights_bytes + cuda_context_bytes)))


def processes_per_instance(vcpus: int, gpus: int, processes_per_gpu: int | None,
                           gpu_memory_bytes: int | None = None, weights_bytes: int | None = None,
                           cuda_context_bytes: int = CUDA_CONTEXT_BYTES, cpus_per_process: int | None = None) -> int:
    """Request-handling processes (gunicorn workers) for an instance, when WEB_WORKERS is unset.

    No GPU: one, whose model threads take every vCPU; with ``cpus_per_process``, one per that many
    vCPUs, each model on its share (MiniLM on 2 vCPUs: two processes of one thread served 1.4x the
    short texts/s of one process of two, whose second thread waits at every small operator's
    barrier while the request threads want the same cores; bench/textembed_bench.py). With GPUs:
    ``processes_per_gpu`` on each; None means one per vCPU of each GPU's share, up to
    MAX_PROCESSES_PER_GPU. Either way no more per GPU than fit in its memory
    (``processes_per_gpu_that_fit``; no cap when the GPU's memory or the weights' size is unknown).
    """
    if gpus <= 0:
        return max(1, vcpus // cpus_per_process) if cpus_per_process else 1
    per_gpu = processes_per_gpu or max(1, min(MAX_PROCESSES_PER_GPU, vcpus // gpus))
    fit = processes_per_gpu_that_fit(gpu_memory_bytes, weights_bytes, cuda_context_bytes)
    if fit is not None:
        per_gpu = min(per_gpu, fit)
    return gpus * per_gpu


def batching_threads(max_batch_size: int) -> int:
    """WEB_THREADS a process needs for its batches to fill: a batch in the model and the next forming."""
    return BATCHES_IN_FLIGHT * max_batch_size


def instance_concurrency(processes: int, web_threads: int, max_batch_size: int) -> int:
    """Cloud Run's --concurrency: processes x min(threads, 2 batches), at most Cloud Run's 1000.

    Google's model instances x (parallel queries + batch size), with a process as the model instance,
    a batch in its model as the parallel queries and the batch forming on top (see the module
    docstring). Requests are counted as one input each, the case that needs the most of them.
    With ``web_threads`` below ``batching_threads(max_batch_size)`` the threads are the limit.
    """
    if min(processes, web_threads, max_batch_size) < 1:
        raise ValueError("processes, web_threads and max_batch_size must be at least 1")
    per_process = min(web_threads, batching_threads(max_batch_size))
    return min(MAX_CLOUD_RUN_CONCURRENCY, processes * per_process)


def weights_size(path: str | Path) -> int | None:
    """Bytes of the model weights under ``path`` (a file or a directory tree), or None if absent."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def gpu_memory(environ=os.environ) -> int | None:
    """memory.total of the first visible GPU, read with nvidia-smi (no CUDA in the caller), or None."""
    if not shutil.which("nvidia-smi"):
        return None
    command = ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    visible = environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if visible and visible != "-1":
        command.append(f"--id={visible}")
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10)
        return int(out.stdout.split()[0]) * MIB  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> None:
    """Print the process count and the concurrency for an instance shape (for the deploy kit)."""
    parser = argparse.ArgumentParser(prog="python -m core.capacity", description=main.__doc__)
    parser.add_argument("--vcpus", type=int, required=True)
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--processes-per-gpu", type=int, default=None,
                        help="fixed processes per GPU; unset = one per vCPU (the CLIP server)")
    parser.add_argument("--cpus-per-process", type=int, default=None,
                        help="no GPU: one process per this many vCPUs; unset = one (the text-embedding service: 1)")
    parser.add_argument("--gpu-memory-mb", type=int, default=L4_MEMORY_BYTES // MIB)
    parser.add_argument("--weights", default=None, help="the baked model file or directory")
    parser.add_argument("--cuda-context-mb", type=int, default=CUDA_CONTEXT_BYTES // MIB)
    parser.add_argument("--web-threads", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, required=True)
    args = parser.parse_args(argv)
    weights = weights_size(args.weights) if args.weights else None
    processes = processes_per_instance(args.vcpus, args.gpus, args.processes_per_gpu,
                                       args.gpu_memory_mb * MIB, weights, args.cuda_context_mb * MIB,
                                       args.cpus_per_process)
    print(f"processes={processes}")
    print(f"concurrency={instance_concurrency(processes, args.web_threads, args.max_batch_size)}")


if __name__ == "__main__":
    main()
