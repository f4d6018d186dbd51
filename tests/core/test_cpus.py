"""The CPU count pools are sized by: the affinity set, capped by the cgroup CPU quota."""

import os

import pytest

from core.model.cpus import available_cpus, cpu_quota, cpus_per_worker

pytestmark = pytest.mark.unit


def cgroup(tmp_path, v2=None, v1_quota=None, v1_period=None) -> dict:
    tmp_path.mkdir(exist_ok=True)
    paths = {"v2": tmp_path / "cpu.max", "v1_quota": tmp_path / "cfs_quota_us", "v1_period": tmp_path / "cfs_period_us"}
    for name, text in (("v2", v2), ("v1_quota", v1_quota), ("v1_period", v1_period)):
        if text is not None:
            paths[name].write_text(text + "\n")
    return paths


def test_the_quota_is_read_from_cgroup_v2_then_v1(tmp_path):
    assert cpu_quota(**cgroup(tmp_path / "limited", v2="250000 100000")) == 2.5
    assert cpu_quota(**cgroup(tmp_path / "unlimited", v2="max 100000")) is None
    assert cpu_quota(**cgroup(tmp_path / "v1", v2="garbage", v1_quota="400000", v1_period="100000")) == 4.0


def test_no_quota_means_the_affinity_set(tmp_path):
    unlimited = cgroup(tmp_path, v1_quota="-1", v1_period="100000")
    assert cpu_quota(**unlimited) is None
    assert available_cpus(**unlimited) == len(os.sched_getaffinity(0))


def test_a_quota_caps_the_count_rounded_up_and_never_below_one(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(**cgroup(tmp_path, v2="50000 100000")) == 1  # half a CPU
    assert available_cpus(**cgroup(tmp_path, v2=f"{150000 * affinity} 100000")) == affinity  # more than we have


def test_each_gunicorn_worker_takes_its_share_of_the_cpus():
    # The master hands every worker the worker count; a model's threads are the CPUs over it.
    cpus = available_cpus()
    assert cpus_per_worker({}) == cpus  # one process (in-process tests, python -m without workers)
    assert cpus_per_worker({"GUNICORN_WORKER_PROCESSES": str(cpus)}) == 1
    assert cpus_per_worker({"GUNICORN_WORKER_PROCESSES": str(cpus * 4)}) == 1  # never below one
