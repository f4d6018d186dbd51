"""The metrics hooks in-process: request-context counts become audio and real-time-factor metrics,
GPU memory is read only on CUDA, and /metrics is behind the key unless METRICS_PUBLIC."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def registry_value(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_audio_seconds_and_real_time_factor_come_from_the_request_context():
    from core import request_context
    from core.web.metrics import declare_units
    from tests.core.test_operations import make_app

    app = make_app()
    declare_units(app, ("audio_seconds",))  # what the worker's declaration gives its app

    @app.post("/fake-transcribe")
    def fake_transcribe():
        request_context.count(audio_seconds=12.5, segments=3)  # what WhisperService.transcribe records
        return {"text": "ok"}

    client = app.test_client()
    labels = {"door": "http"}
    before = (registry_value("audio_seconds_processed_total", **labels),
              registry_value("transcription_real_time_factor_count"))
    assert client.post("/fake-transcribe").status_code == 200
    assert registry_value("audio_seconds_processed_total", **labels) == before[0] + 12.5
    assert registry_value("transcription_real_time_factor_count") == before[1] + 1


def test_gpu_memory_is_only_read_on_cuda():
    from core.web.metrics import gpu_memory_bytes

    assert gpu_memory_bytes("cpu") is None and gpu_memory_bytes(None) is None


@pytest.mark.gpu
def test_gpu_memory_reads_the_device_in_use():
    import torch

    from core.web.metrics import gpu_memory_bytes

    block = torch.ones(64 * 1024 * 1024, device="cuda")  # 256 MiB
    assert gpu_memory_bytes("cuda:0") >= block.numel() * 4


def test_metrics_need_the_key_unless_public():
    from tests.core.test_operations import make_app

    keyed = make_app(api_key="k").test_client()
    assert keyed.get("/metrics").status_code == 401
    assert keyed.get("/metrics", headers={"X-API-Key": "k"}).status_code == 200
    public = make_app(api_key="k", metrics_public=True).test_client()
    scrape = public.get("/metrics")
    assert scrape.status_code == 200 and b"http_requests_total" in scrape.data
    assert public.post("/embed", data={"text": "x"}).status_code == 401  # only /metrics opened
