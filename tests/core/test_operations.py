"""Operations of the shared core with the fake CLIP backend: API keys beside IAM tokens, rate-limit
buckets and a dead Redis, what /health shows to whom, and no internal text in error messages."""

from __future__ import annotations

import io
import json
import threading

import pytest
from PIL import Image

from server.app import create_app
from server.backends.fake import FakeClipBackend
from server.models import resolve_spec
from server.settings import ServerSettings
from tests.conftest import free_port, wait_until
from tests.media import encode

pytestmark = pytest.mark.unit

ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2NsaXAifQ.c2lnbmF0dXJl"  # shape of a Google ID token
PNG = encode(Image.new("RGB", (40, 30), (200, 30, 30)), "PNG")


def make_app(backend_cls=FakeClipBackend, wait_ready=True, **overrides):
    settings = ServerSettings.from_env({}, clip_model="fake", **overrides)
    app = create_app(settings, backend=backend_cls(settings, resolve_spec(settings)))
    if wait_ready:
        wait_until(lambda: app.extensions["model_runner"].batcher.state != "starting", 10)
    return app


def log_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# ---- API keys ---------------------------------------------------------------------------------

def test_a_correct_x_api_key_passes_beside_a_google_id_token_in_authorization():
    client = make_app(api_key="s3cret").test_client()
    iam = {"Authorization": f"Bearer {ID_TOKEN}"}
    assert client.post("/embed", data={"text": "hi"}, headers={**iam, "X-API-Key": "s3cret"}).status_code == 200
    assert client.post("/embed", data={"text": "hi"}, headers={**iam, "X-API-Key": "wrong"}).status_code == 401
    assert client.post("/embed", data={"text": "hi"}, headers=iam).status_code == 401
    # With X-Serverless-Authorization carrying the token, Authorization is free for the key.
    serverless = {"X-Serverless-Authorization": f"Bearer {ID_TOKEN}", "Authorization": "Bearer s3cret"}
    assert client.post("/embed", data={"text": "hi"}, headers=serverless).status_code == 200


def test_several_keys_each_work():
    client = make_app(api_key="key-one, key-two").test_client()
    for key in ("key-one", "key-two"):
        assert client.post("/embed", data={"text": "x"}, headers={"X-API-Key": key}).status_code == 200
    assert client.post("/embed", data={"text": "x"}, headers={"X-API-Key": "key-three"}).status_code == 401


# ---- rate limits --------------------------------------------------------------------------------

def classify(client, headers):
    return client.post("/classify", data={"image": (io.BytesIO(PNG), "a.png"), "labels": ["red", "blue"]},
                       headers=headers, content_type="multipart/form-data")


def test_one_budget_per_key_across_routes_and_two_keys_behind_one_address_count_apart():
    client = make_app(api_key="alice-key,bob-key", rate_limit="2/minute").test_client()
    same_address = {"X-Forwarded-For": "203.0.113.7"}
    alice = {**same_address, "X-API-Key": "alice-key"}
    bob = {**same_address, "X-API-Key": "bob-key"}
    assert client.post("/embed", data={"text": "x"}, headers=alice).status_code == 200
    assert classify(client, alice).status_code == 200
    refused = client.post("/embed", data={"text": "x"}, headers=alice)  # /embed's second, the budget's third
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "rate_limited"
    assert classify(client, alice).status_code == 429
    assert client.post("/embed", data={"text": "x"}, headers=bob).status_code == 200
    assert client.get("/health").status_code == 200 and client.get("/livez").status_code == 200


def test_per_route_budgets_when_configured():
    client = make_app(rate_limit="1/minute", rate_limit_per_route=True).test_client()
    assert client.post("/embed", data={"text": "x"}).status_code == 200
    assert classify(client, {}).status_code == 200
    assert client.post("/embed", data={"text": "x"}).status_code == 429


def metric_value(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_unreachable_redis_fails_open_with_a_warning_and_a_metric(capsys):
    dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    client = make_app(rate_limit="100/minute", rate_limit_storage_uri=dead).test_client()
    before = metric_value("rate_limit_storage_errors_total", outcome="allowed")
    capsys.readouterr()
    statuses = [client.post("/embed", data={"text": "x"}).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert metric_value("rate_limit_storage_errors_total", outcome="allowed") == before + 3
    out = capsys.readouterr().out
    warnings = [line for line in log_lines(out)
                if line["severity"] == "WARNING" and "rate-limit storage" in line["message"]]
    assert len(warnings) == 1, out  # one line, not one per request
    assert "hunter2" not in out and "redis://:***@127.0.0.1" in warnings[0]["message"]


def test_unreachable_redis_fails_closed_when_configured():
    dead = f"redis://127.0.0.1:{free_port()}"
    client = make_app(rate_limit="100/minute", rate_limit_storage_uri=dead, rate_limit_fail_closed=True).test_client()
    before = metric_value("rate_limit_storage_errors_total", outcome="refused")
    response = client.post("/embed", data={"text": "x"})
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "rate_limit_unavailable"
    assert int(response.headers["Retry-After"]) > 0
    assert metric_value("rate_limit_storage_errors_total", outcome="refused") == before + 1
    assert client.get("/health").status_code == 200  # probes are never rate limited


def test_the_redis_password_is_masked_in_every_log_line(capsys):
    uri = f"redis://default:hunter2@127.0.0.1:{free_port()}/0"
    client = make_app(rate_limit="5/minute", rate_limit_storage_uri=uri).test_client()
    client.post("/embed", data={"text": "x"})
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "redis://default:***@127.0.0.1" in out  # the start-up line shows the host, not the password


# ---- /health ----------------------------------------------------------------------------------

def test_health_is_minimal_without_the_key_and_detailed_with_it():
    client = make_app(api_key="s3cret").test_client()
    public = client.get("/health")
    assert public.status_code == 200 and public.get_json() == {"status": "ok", "service": "clip-server"}
    detailed = client.get("/health", headers={"X-API-Key": "s3cret"}).get_json()
    assert detailed["model"] == "fake" and detailed["dim"] == 64 and "batching" in detailed and "stats" in detailed
    assert client.get("/health", headers={"X-API-Key": "wrong"}).get_json() == public.get_json()


class BrokenLoad(FakeClipBackend):
    def load(self):
        raise FileNotFoundError("[Errno 2] No such file: '/srv/models/clip/secret-weights.safetensors'")


def test_a_failed_load_shows_a_reason_code_publicly_and_the_text_only_with_the_key():
    app = make_app(BrokenLoad, api_key="s3cret")
    client = app.test_client()
    public = client.get("/health")
    assert public.status_code == 503
    assert public.get_json() == {"status": "unavailable", "service": "clip-server", "reason": "load_failed"}
    keyed = client.get("/health", headers={"X-API-Key": "s3cret"}).get_json()
    assert "secret-weights" in keyed["reason_detail"] and keyed["reason"] == "load_failed"
    refused = client.post("/embed", data={"text": "x"}, headers={"X-API-Key": "s3cret"})
    assert refused.status_code == 503
    message = refused.get_json()["error"]["message"]
    assert "FileNotFoundError" not in message and "secret-weights" not in message and "load_failed" in message


def test_classify_while_the_model_loads_says_loading():
    gate = threading.Event()

    class SlowLoad(FakeClipBackend):
        def load(self):
            gate.wait(10)
            super().load()

    client = make_app(SlowLoad, wait_ready=False).test_client()
    try:
        refused = client.post("/classify", data={"image": (io.BytesIO(PNG), "a.png"), "labels": ["cat", "dog"]})
    finally:
        gate.set()
    assert refused.status_code == 503
    assert refused.get_json()["error"]["message"] == "the service is not ready (loading); retry later"


def test_an_open_service_shows_details_but_no_file_paths():
    client = make_app().test_client()
    body = client.get("/health").get_json()
    assert body["model"] == "fake" and "weights" not in body


# ---- error messages ---------------------------------------------------------------------------

class ExplodingForward(FakeClipBackend):
    armed = False  # after warm-up

    def forward(self, kind, batch):
        if self.armed:
            raise RuntimeError("CUDA error: an illegal memory access at /srv/models/clip/internal.bin")
        return super().forward(kind, batch)


def test_an_internal_exception_reaches_the_log_with_the_trace_not_the_client(capsys):
    app = make_app(ExplodingForward)
    app.extensions["model_runner"].backend.armed = True
    client = app.test_client()
    capsys.readouterr()
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = client.post("/embed", data={"text": "x"}, headers={"X-Cloud-Trace-Context": f"{trace}/1;o=1"})
    assert response.status_code == 500
    error = response.get_json()["error"]
    assert error["code"] == "inference_failed"
    for internal in ("RuntimeError", "CUDA", "illegal memory", "/srv/models"):
        assert internal not in error["message"]
    logged = [line for line in log_lines(capsys.readouterr().out) if "illegal memory access" in line["message"]]
    assert any(line.get("logging.googleapis.com/trace") == trace for line in logged), logged


def test_open_health_drops_paths_and_raw_errors_at_any_depth():
    from core.errors import Reason
    from core.web.health import health_body

    details = {"model": "m", "weights": "/srv/w.bin", "stats": {"batches": 3, "last_error": "OSError: /srv/x"}}
    body = health_body(True, None, details, "svc", keyed=False, open_service=True)
    assert body == {"status": "ok", "service": "svc", "model": "m", "stats": {"batches": 3}}
    keyed = health_body(False, Reason("load_failed", "model failed to start: OSError: /srv/x"), details, "svc",
                        keyed=True, open_service=False)
    assert keyed["reason"] == "load_failed" and keyed["weights"] == "/srv/w.bin" and "OSError" in keyed["reason_detail"]
