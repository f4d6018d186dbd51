"""The one JSON reader: bounds checked on the raw bytes, at every door of both apps, fast and small."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from core.errors import InvalidInput, PayloadTooLarge
from core.web.json_body import JsonBounds, check_json_bytes, loads_bounded
from tests.conftest import ROOT, wait_until

BOUNDS = JsonBounds(max_bytes=1 << 20, max_depth=32, max_items=100)
DEEP = b"[" * 50_000 + b"]" * 50_000  # 100 KB, 50,000 levels: RecursionError in json.loads
HUGE_ARRAY_ITEMS = 8_700_000  # {"images": ["", "", ...]}: 25 MiB


def huge_array(items: int = HUGE_ARRAY_ITEMS) -> bytes:
    """``{"images": ["", "", ...]}`` with ``items`` empty strings (25 MiB at the default)."""
    return b'{"images": [' + b'"",' * (items - 1) + b'""]}'


@pytest.mark.unit
def test_depth_is_checked_before_parsing_and_never_a_recursion_error():
    assert loads_bounded(b'{"texts": ["a"]}', JsonBounds(1 << 20, 2, 100)) == {"texts": ["a"]}
    for body, depth in ((b'{"texts": [["a"]]}', 2), (b"[" * 40 + b"]" * 40, 32), (DEEP, 32)):
        with pytest.raises(InvalidInput) as refused:
            loads_bounded(body, JsonBounds(1 << 20, depth, 100))
        assert refused.value.code == "json_too_deep"
    with pytest.raises(InvalidInput) as refused:
        loads_bounded(b'{"a": ', BOUNDS)
    assert refused.value.code == "invalid_json"


@pytest.mark.unit
def test_brackets_and_commas_inside_strings_do_not_count():
    text = "[[[,,,]]]" * 1000  # 9,000 brackets and commas, all inside one string
    body = json.dumps({"texts": [text, "a\\\"[,"], "encoding_format": "float"}).encode()
    assert loads_bounded(body, BOUNDS)["texts"][0] == text
    assert loads_bounded(json.dumps({"texts": ["x"] * 99}), BOUNDS)["texts"] == ["x"] * 99


@pytest.mark.unit
def test_too_many_values_and_too_many_bytes_are_413():
    for body in (json.dumps({"texts": ["x"] * 101}).encode(), b"[" + b"1," * 5000 + b"1]",
                 b'{"a": ' + b'""' * 10_000 + b"}"):  # strings with no commas: not JSON, not scanned in full
        with pytest.raises(PayloadTooLarge) as refused:
            check_json_bytes(body, BOUNDS)
        assert refused.value.code == "too_many_inputs"
    with pytest.raises(PayloadTooLarge) as refused:
        check_json_bytes(b'"' + b"x" * (1 << 20) + b'"', BOUNDS)
    assert refused.value.code == "payload_too_large"


def _server_app(tmp_path):
    from server.app import create_app
    from server.backends.fake import FakeClipBackend
    from server.models import resolve_spec
    from server.settings import ServerSettings

    settings = ServerSettings.from_env({}, clip_model="fake", log_level="WARNING", events_output=str(tmp_path / "e"),
                                       callback_secret="s", callback_allowed_hosts=("localhost:9",))
    return create_app(settings, backend=FakeClipBackend(settings, resolve_spec(settings)))


def _worker_app(tmp_path):
    from worker.app import create_app
    from worker.backends.fake import FakeWhisperBackend
    from worker.settings import WorkerSettings

    settings = WorkerSettings.from_env({}, whisper_model="fake", log_level="WARNING", events_output=str(tmp_path / "e"),
                                       callback_secret="s", callback_allowed_hosts=("localhost:9",))
    return create_app(settings, backend=FakeWhisperBackend(settings))


@pytest.mark.unit
@pytest.mark.parametrize("make_app", [_server_app, _worker_app], ids=["clip", "whisper"])
def test_every_operation_refuses_deep_and_huge_json_with_a_4xx(make_app, tmp_path):
    """Every operation of the app's own OpenAPI description, as JSON with both bodies: a 4xx, never a 5xx."""
    app = make_app(tmp_path)
    client = app.test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 30)
    document = client.get("/openapi.json").get_json()
    huge = huge_array(1_000_000)  # 3 MiB: over every count limit, under every size limit
    answers = {}
    for path, item in document["paths"].items():
        url = re.sub(r"\{[^}]+\}", "0123456789abcdef", path)
        for method, operation in item.items():
            if "requestBody" not in operation:
                continue
            for name, body in (("deep", DEEP), ("huge", huge)):
                for headers in ({"Content-Type": "application/json"}, {"Content-Type": "application/cloudevents+json"},
                                {"Content-Type": "application/json", "ce-id": "1", "ce-specversion": "1.0",
                                 "ce-type": "google.cloud.storage.object.v1.finalized", "ce-source": "//s"}):
                    response = client.open(url, method=method.upper(), data=body, headers=headers)
                    answers[(method, path, name, headers["Content-Type"], len(headers))] = response.status_code
                    assert 400 <= response.status_code < 500, (method, path, name, headers, response.get_data()[:300])
    assert {("post", "/events/pubsub"), ("post", "/events/storage")} <= {key[:2] for key in answers}
    deep_json = {key[1]: code for key, code in answers.items() if key[2] == "deep" and key[3] == "application/json"}
    # Where the body is read as JSON at all, deep is json_too_deep's 400 (multipart-only routes: 4xx earlier).
    for path in ("/events/pubsub", "/events/storage", "/v1/embeddings", "/embed", "/classify"):
        if path in deep_json:
            assert deep_json[path] == 400, (path, deep_json[path])


PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    from server.app import create_app
    from server.backends.fake import FakeClipBackend
    from server.models import resolve_spec
    from server.settings import ServerSettings
    from tests.core.test_json_body import huge_array

    settings = ServerSettings.from_env({}, clip_model="fake", log_level="WARNING")
    client = create_app(settings, backend=FakeClipBackend(settings, resolve_spec(settings))).test_client()
    body = huge_array()
    client.post("/embed", data=b'{"texts": ["warm-up"]}', content_type="application/json")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the peak so far
    started = time.perf_counter()
    response = client.post("/embed", data=body, content_type="application/json")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"status": response.status_code, "code": response.get_json()["error"]["code"],
                      "seconds": seconds, "peak_growth_mb": (peak - before) / 1024, "body_mb": len(body) / 2**20}))
""")


@pytest.mark.unit
def test_a_25_mib_array_of_empty_strings_is_refused_fast_and_small():
    """Before: 413 after 8.6 s and +780 MiB of peak memory (the array parsed in full, then counted)."""
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["body_mb"] > 24 and result["status"] == 413 and result["code"] == "too_many_inputs", result
    # Measured here: 0.05 s and +26 MiB (the test client's copy of the body); before, 12.6 s and +729 MiB.
    assert result["seconds"] < 1.0, result
    assert result["peak_growth_mb"] < 300, result
