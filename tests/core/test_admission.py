"""The decode-memory budget, the container limit it derives from, returning freed memory."""

from __future__ import annotations

import threading
import time

import pytest

from core.errors import Overloaded, PayloadTooLarge
from core.model.admission import MIB, WORKER_COUNT_ENV, MemoryBudget, auto_budget_bytes, budget_from_settings
from core.model.memory import container_memory_limit, physical_memory, release_freed_memory
from core.settings import CoreSettings, SettingsError

pytestmark = pytest.mark.unit


def test_reservations_fit_until_the_budget_is_full_then_429_with_retry_after():
    budget = MemoryBudget(100 * MIB, wait_s=0.05)
    with budget.reserve(60 * MIB), budget.reserve(40 * MIB):
        assert budget.in_use == 100 * MIB
        started = time.monotonic()
        with pytest.raises(Overloaded) as refused, budget.reserve(1):
            pass
        assert time.monotonic() - started >= 0.05  # it waited before refusing
        assert refused.value.status == 429 and refused.value.code == "memory_busy"
        assert refused.value.retry_after >= 1
    assert budget.in_use == 0 and budget.peak == 100 * MIB and budget.refused == 1
    with budget.reserve(100 * MIB):  # everything was released, exceptions included
        pass


def test_a_request_larger_than_the_whole_budget_is_413_at_once():
    budget = MemoryBudget(10 * MIB, wait_s=5)
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge) as refused, budget.reserve(10 * MIB + 1, what="decoding this image"):
        pass
    assert time.monotonic() - started < 1  # no point waiting: it can never fit
    assert refused.value.code == "input_too_large_to_decode" and "DECODE_MEMORY_BUDGET_MB" in refused.value.message


def test_a_waiting_request_gets_in_when_another_finishes():
    budget = MemoryBudget(10 * MIB, wait_s=5)
    entered, leave = threading.Event(), threading.Event()

    def second_request():
        with budget.reserve(5 * MIB):
            entered.set()
            leave.wait(5)

    with budget.reserve(8 * MIB):
        waiter = threading.Thread(target=second_request)
        waiter.start()
        time.sleep(0.1)
        assert not entered.is_set()
    assert entered.wait(2) and budget.in_use == 5 * MIB
    leave.set()
    waiter.join(2)
    assert budget.in_use == 0


def test_container_limit_reads_cgroup_v2_then_v1_then_ram(tmp_path):
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    v2.write_text("2147483648\n")
    v1.write_text("1073741824\n")
    assert container_memory_limit(v2, v1) == min(2 * 1024 * MIB, physical_memory())
    v2.write_text("max\n")
    assert container_memory_limit(v2, v1) == min(1024 * MIB, physical_memory())
    v1.write_text("9223372036854771712\n")  # v1's "unlimited"
    assert container_memory_limit(v2, v1) == physical_memory()
    assert container_memory_limit(tmp_path / "absent", tmp_path / "absent too") == physical_memory()


def test_auto_budget_is_a_quarter_of_the_container_split_across_worker_processes(monkeypatch):
    assert auto_budget_bytes(1, 32 * 1024 * MIB) == 8 * 1024 * MIB
    assert auto_budget_bytes(4, 32 * 1024 * MIB) == 2 * 1024 * MIB
    monkeypatch.setenv(WORKER_COUNT_ENV, "4")
    auto = budget_from_settings(CoreSettings.from_env({}))
    assert auto.limit_bytes == auto_budget_bytes(4)
    fixed = budget_from_settings(CoreSettings.from_env({"DECODE_MEMORY_BUDGET_MB": "300",
                                                        "DECODE_MEMORY_WAIT_S": "0.5"}))
    assert (fixed.limit_bytes, fixed.wait_s) == (300 * MIB, 0.5)
    with pytest.raises(SettingsError):
        CoreSettings.from_env({"DECODE_MEMORY_BUDGET_MB": "0"})


def test_gunicorn_tells_workers_how_many_share_the_instance():
    from core.gunicorn_conf import apply

    namespace: dict = {}
    apply(namespace, CoreSettings.from_env({"WEB_WORKERS": "3"}))
    assert f"{WORKER_COUNT_ENV}=3" in namespace["raw_env"]


def test_freed_memory_goes_back_to_the_os_after_a_large_request():
    """Blocks freed below a live one stay in glibc's heap until malloc_trim hands them back."""
    import psutil

    process = psutil.Process()
    blocks = [bytearray(100 * 1024) for _ in range(2000)]  # 200 MB of heap blocks (below the mmap threshold)
    keep = blocks[-1]  # pins the top of the heap: glibc cannot shrink it by itself
    del blocks
    before = process.memory_info().rss
    assert release_freed_memory() is True  # the service images are Debian (glibc)
    after = process.memory_info().rss
    assert before - after > 100 * 1024 * 1024, (before, after)
    assert len(keep) == 100 * 1024


def test_memory_is_trimmed_after_a_large_request_or_once_a_burst_of_small_ones_drains(monkeypatch):
    import core.model.admission

    trims = []
    monkeypatch.setattr(core.model.admission, "release_freed_memory", lambda: trims.append(1))
    budget = MemoryBudget(100 * MIB, trim_after_bytes=64 * MIB)
    for _ in range(20):
        with budget.reserve(7 * MIB):
            pass
    assert trims == []  # small requests, however many: nothing worth a trim
    with budget.reserve(40 * MIB):
        with budget.reserve(40 * MIB):
            pass
        assert trims == []  # the burst is still running
    assert trims == [1]  # 90 MiB released in all and nothing in use: trimmed once
    with budget.reserve(70 * MIB):
        pass
    assert trims == [1, 1]
