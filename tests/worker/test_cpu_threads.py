"""CTranslate2's thread count follows the CPUs the container may use, not the host's cores."""

import pytest

import worker.backends.whisper_backend as whisper_backend

pytestmark = pytest.mark.unit


def test_auto_threads_follow_the_cpu_quota(monkeypatch):
    monkeypatch.setattr(whisper_backend, "available_cpus", lambda: 3)  # e.g. a quota of 3 CPUs on a 64-core host
    assert whisper_backend.cpu_threads(0) == 3
    assert whisper_backend.cpu_threads(5) == 5  # WHISPER_CPU_THREADS set: taken as it is
