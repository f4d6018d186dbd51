"""Settings, auth, rate limits, body limits, errors and logs of the shared core (fake CLIP backend)."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from core.errors import error_body
from core.settings import SettingsError, settings_table
from core.web.logs import JsonFormatter, trace_from_header
from server.app import create_app
from server.settings import ServerSettings
from tests.conftest import wait_until
from worker.settings import WorkerSettings

pytestmark = pytest.mark.unit


def make_client(**overrides):
    settings = ServerSettings.from_env({}, clip_model="fake", **overrides)
    client = create_app(settings).test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 10)
    return client


def test_settings_parse_types_and_name_the_variable_on_errors():
    settings = ServerSettings.from_env({"PORT": "9000", "MAX_BATCH_SIZE": "auto", "API_KEY": "k",
                                        "MAX_WAIT_MS": "2.5", "CLIP_MODEL": "ViT-B-32"})
    assert (settings.port, settings.max_batch_size, settings.max_wait_ms) == (9000, None, 2.5)
    assert settings.public_dict()["api_key"] == "***"
    for env, value, fragment in [("PORT", "eighty", "PORT='eighty'"), ("MAX_BATCH_SIZE", "0", "MAX_BATCH_SIZE"),
                                 ("PORT", "70000", "PORT"), ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
                                 ("RATE_LIMIT", "lots", "RATE_LIMIT")]:
        with pytest.raises(SettingsError, match=fragment):
            ServerSettings.from_env({env: value})


def test_service_defaults_differ_where_they_should():
    assert ServerSettings.from_env({}).port == 5001
    assert WorkerSettings.from_env({}).port == 8080


def test_configuration_page_documents_every_setting():
    from pathlib import Path

    from core.declaration import declared
    from tests.conftest import APP_PACKAGES

    configuration = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for cls in (declared(package).settings for package in APP_PACKAGES):
        for line in settings_table(cls).splitlines()[2:]:
            env = line.split("`")[1]
            assert f"`{env}`" in configuration, f"{env} is missing from docs/configuration.md"


def test_api_key_via_bearer_or_header_and_health_stays_open():
    client = make_client(api_key="s3cret")
    assert client.get("/health").status_code == 200
    refused = client.post("/embed", data={"text": "hi"})
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"
    assert client.post("/embed", data={"text": "hi"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/embed", data={"text": "hi"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.post("/embed", data={"text": "hi"}, headers={"X-API-Key": "s3cret"}).status_code == 200


def test_rate_limit_answers_429_with_retry_after_and_spares_health():
    client = make_client(rate_limit="2/minute")
    assert [client.post("/embed", data={"text": "x"}).status_code for _ in range(2)] == [200, 200]
    limited = client.post("/embed", data={"text": "x"})
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    assert all(client.get("/health").status_code == 200 for _ in range(5))


def test_a_429_never_says_retry_after_0():
    # 1/second: the window resets in under a second, which flask-limiter truncates to "Retry-After: 0"
    # (a client that obeys retries at once into the same 429).
    client = make_client(rate_limit="1/second", log_level="ERROR")
    retry_after, started = set(), time.monotonic()
    while time.monotonic() - started < 1.5:  # across a whole window, its last fraction of a second included
        answer = client.post("/embed", data={"text": "x"})
        if answer.status_code == 429:
            retry_after.add(answer.headers["Retry-After"])
    assert retry_after == {"1"}


def test_rate_limit_is_per_client_address_behind_the_proxy():
    client = make_client(rate_limit="1/minute")
    first = {"X-Forwarded-For": "203.0.113.7"}
    assert client.post("/embed", data={"text": "x"}, headers=first).status_code == 200
    assert client.post("/embed", data={"text": "x"}, headers=first).status_code == 429
    assert client.post("/embed", data={"text": "x"}, headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200


def test_body_over_the_limit_is_413_json():
    client = make_client(max_request_mb=0.01)
    big = io.BytesIO(b"\xff" * 20_000)
    response = client.post("/embed", data={"image": (big, "big.jpg")})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


def test_unknown_route_and_wrong_method_are_json():
    client = make_client()
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.get_json() == error_body("not_found", missing.get_json()["error"]["message"])
    wrong = client.get("/embed")
    assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"]
    assert wrong.get_json()["error"]["code"] == "method_not_allowed"


def test_unsupported_content_type_is_415():
    client = make_client()
    response = client.post("/embed", data="hello", content_type="text/plain")
    assert response.status_code == 415 and "multipart/form-data" in response.get_json()["error"]["message"]


def test_json_log_lines_carry_trace_and_never_bodies_or_keys(capsys):
    client = make_client(api_key="very-secret-key")
    capsys.readouterr()
    trace = "0123456789abcdef0123456789abcdef"
    client.post("/embed", data={"text": "confidential words"},
                headers={"X-API-Key": "very-secret-key", "X-Cloud-Trace-Context": f"{trace}/1;o=1"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    request_lines = [line for line in lines if line.get("httpRequest", {}).get("requestUrl") == "/embed"]
    assert request_lines, lines
    entry = request_lines[-1]
    assert entry["severity"] == "INFO" and entry["httpRequest"]["status"] == 200
    assert entry["logging.googleapis.com/trace"] == "0123456789abcdef0123456789abcdef"
    assert entry["latency_ms"] >= 0 and entry["batch_sizes"] == [1]
    everything = "\n".join(json.dumps(line) for line in lines)
    assert "confidential" not in everything and "very-secret-key" not in everything


def test_trace_header_parsing():
    assert trace_from_header("abcdef0123/99;o=1", "my-project") == "projects/my-project/traces/abcdef0123"
    assert trace_from_header("not hex!/1", None) is None
    assert trace_from_header(None, "p") is None


def test_json_formatter_emits_extras():
    record = logging.makeLogRecord({"msg": "batch done", "levelname": "INFO", "batch_size": 8})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["severity"] == "INFO" and entry["message"] == "batch done" and entry["batch_size"] == 8
