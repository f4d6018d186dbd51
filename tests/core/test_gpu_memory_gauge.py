"""The GPU-memory gauge reads each device once, however many processes share it (issue 23, item 4).

No GPU here: each process's reading is replaced by a fixed device-wide figure, as every process
on one GPU would read; the processes, the multiprocess files and the /metrics rendering are real.
"""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

GIB = 1024**3


def _in_worker(metrics_dir: str, code: str, visible: str = "0") -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir, "CUDA_VISIBLE_DEVICES": visible}
    out = subprocess.run([sys.executable, "-c", "import core.web.metrics as m\n" + code], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _gauge(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {sample.labels["gpu"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "gpu_memory_used_bytes"}


def test_processes_sharing_a_gpu_report_its_memory_once(tmp_path):
    for used in range(1, 5):  # CLIP processes on one GPU, each reading the device-wide figure
        _in_worker(str(tmp_path), f"m.gpu_memory_bytes = lambda device: {used * GIB}\n"
                                  "m.report_gpu_memory('cuda:0')")
    gauge = _gauge(_in_worker(str(tmp_path), "print(m.render_latest().decode())"))
    assert gauge == {"0": 4 * GIB}  # the latest reading, not the sum of all four (10 GiB)


def test_each_gpu_is_labelled_by_its_physical_id(tmp_path):
    for visible, used in (("0", 2 * GIB), ("1", 5 * GIB)):  # gunicorn pins each worker to one GPU
        _in_worker(str(tmp_path), f"m.gpu_memory_bytes = lambda device: {used}\nm.report_gpu_memory('cuda')",
                   visible=visible)
    gauge = _gauge(_in_worker(str(tmp_path), "print(m.render_latest().decode())"))
    assert gauge == {"0": 2 * GIB, "1": 5 * GIB}


def test_no_cuda_device_reports_nothing(tmp_path):
    _in_worker(str(tmp_path), "m.report_gpu_memory('cpu'); m.report_gpu_memory(None)")
    assert _gauge(_in_worker(str(tmp_path), "print(m.render_latest().decode())")) == {}
