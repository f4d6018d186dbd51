"""The process count and the concurrency an instance gets (core/capacity.py), without a GPU."""

import pytest

from core.capacity import (
    GIB,
    L4_MEMORY_BYTES,
    MAX_PROCESSES_PER_GPU,
    batching_threads,
    instance_concurrency,
    main,
    processes_per_gpu_that_fit,
    processes_per_instance,
    weights_size,
)

pytestmark = pytest.mark.unit


def test_processes_follow_gpus_and_vcpus():
    assert processes_per_instance(vcpus=8, gpus=0, processes_per_gpu=None) == 1  # CPU: one replica
    assert processes_per_instance(vcpus=8, gpus=1, processes_per_gpu=1) == 1  # Whisper: one per GPU
    assert processes_per_instance(vcpus=8, gpus=1, processes_per_gpu=None) == 8  # CLIP on an 8-vCPU L4
    assert processes_per_instance(vcpus=3, gpus=1, processes_per_gpu=None) == 3  # one per vCPU
    assert processes_per_instance(vcpus=6, gpus=2, processes_per_gpu=None) == 6  # 3 on each GPU
    assert processes_per_instance(vcpus=64, gpus=1, processes_per_gpu=None) == MAX_PROCESSES_PER_GPU
    assert processes_per_instance(vcpus=2, gpus=4, processes_per_gpu=None) == 4  # at least one per GPU


def test_a_cpu_service_that_asks_gets_a_process_per_share_of_the_vcpus():
    # textembed declares cpus_per_process=1: a replica per vCPU on a CPU instance, and a GPU ignores it
    assert processes_per_instance(vcpus=4, gpus=0, processes_per_gpu=1, cpus_per_process=1) == 4
    assert processes_per_instance(vcpus=8, gpus=0, processes_per_gpu=1, cpus_per_process=2) == 4
    assert processes_per_instance(vcpus=1, gpus=0, processes_per_gpu=1, cpus_per_process=2) == 1
    assert processes_per_instance(vcpus=8, gpus=1, processes_per_gpu=1, cpus_per_process=1) == 1


def test_gpu_memory_caps_the_processes_of_a_large_model():
    def on_l4(weights_gb: float) -> int:
        return processes_per_instance(8, 1, None, L4_MEMORY_BYTES, int(weights_gb * 1e9))

    assert on_l4(0.6) == 8  # ViT-B-32: 8 x (0.6 GB + 1 GiB context) fits 24 GB
    assert on_l4(3.9) == 4  # ViT-H-14 in fp32: the later replicas would run out in warm-up
    assert on_l4(10.2) == 1  # ViT-bigG-14
    assert on_l4(40) == 1  # too large even once: the load's out-of-memory error says so
    # Unknown GPU memory or weights: the vCPU rule alone.
    assert processes_per_instance(8, 1, None, None, int(3.9e9)) == 8
    assert processes_per_gpu_that_fit(L4_MEMORY_BYTES, None) is None
    # The per-process context counts: a larger one fits fewer.
    assert processes_per_gpu_that_fit(L4_MEMORY_BYTES, int(0.6e9), cuda_context_bytes=3 * GIB) == 5


def test_concurrency_lets_every_process_fill_a_batch():
    # 8 CLIP processes on an L4, batches of 32: a batch in the model and one forming, 64 requests
    # each with the threads to hold them, not 32 for all 8.
    assert batching_threads(32) == 64
    assert instance_concurrency(processes=8, web_threads=64, max_batch_size=32) == 512
    assert instance_concurrency(processes=8, web_threads=32, max_batch_size=32) == 256  # threads limit
    assert instance_concurrency(processes=8, web_threads=256, max_batch_size=32) == 512  # no more helps
    assert instance_concurrency(processes=1, web_threads=16, max_batch_size=16) == 16  # Whisper on an L4
    assert instance_concurrency(processes=16, web_threads=128, max_batch_size=64) == 1000  # Cloud Run's cap
    with pytest.raises(ValueError):
        instance_concurrency(0, 32, 32)


def test_weights_size_reads_a_file_or_a_tree(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.bin").write_bytes(b"x" * 100)
    (tmp_path / "config.json").write_bytes(b"{}")
    assert weights_size(tmp_path) == 102
    assert weights_size(tmp_path / "a" / "model.bin") == 100
    assert weights_size(tmp_path / "missing") is None


def test_the_command_line_prints_both_numbers(tmp_path, capsys):
    with open(tmp_path / "model.bin", "wb") as weights:
        weights.truncate(3_944_000_000)
    main(["--vcpus", "8", "--gpus", "1", "--weights", str(tmp_path), "--web-threads", "64",
          "--max-batch-size", "32"])
    assert capsys.readouterr().out.split() == ["processes=4", "concurrency=256"]
