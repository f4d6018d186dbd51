"""docs/async.md (callback_url) runs as printed: its curl lines, its Python receiver, its Node verifier."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from core.deferred.callbacks import sign
from tests.conftest import ROOT, free_port, run_service, wait_until
from tests.readme_examples import page

SECTION = page("async").read_text()
SECRET = "dev-secret"


def block(language: str) -> str:
    """The section's code blocks in ``language``, joined."""
    return "\n".join(re.findall(rf"```{language}\n(.*?)```", SECTION, flags=re.S))


@pytest.mark.unit
def test_python_verifier_accepts_our_signature_and_rejects_old_or_tampered(monkeypatch):
    monkeypatch.setenv("CALLBACK_SECRET", SECRET)
    namespace: dict = {"__name__": "readme_receiver"}
    exec(compile(block("python"), "async-receiver.py", "exec"), namespace)  # noqa: S102 - the page's own code
    verify_signature = namespace["verify_signature"]
    body = b'{"job_id":"j","status":"succeeded"}'
    now = time.time()
    assert verify_signature(sign(SECRET, body), body)
    assert not verify_signature(sign(SECRET, body, int(now) - 301), body)  # replayed: too old
    assert not verify_signature(sign(SECRET, body), body + b"x")
    assert not verify_signature(sign("other", body), body)
    assert not verify_signature("", body)


@pytest.mark.unit
def test_node_handler_verifies_like_the_service_signs(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    (tmp_path / "route.mjs").write_text(block("js"))
    body = '{"job_id":"j","status":"succeeded","response_format":"vtt","vtt":"WEBVTT\\n\\n"}'
    now = int(time.time())
    cases = {"fresh": sign(SECRET, body.encode(), now), "old": sign(SECRET, body.encode(), now - 301),
             "tampered": sign(SECRET, body.encode() + b" ", now), "missing": ""}
    (tmp_path / "driver.mjs").write_text(f"""
import {{ POST }} from "./route.mjs";
const cases = {json.dumps(cases)};
const out = {{}};
for (const [name, signature] of Object.entries(cases)) {{
  const request = new Request("http://localhost/api/hooks/transcript", {{
    method: "POST", body: {json.dumps(body)}, headers: {{ "X-Signature": signature }} }});
  out[name] = (await POST(request)).status;
}}
console.log(JSON.stringify(out));
""")
    result = subprocess.run([node, "driver.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "CALLBACK_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"fresh": 204, "old": 401, "tampered": 401, "missing": 401}


@pytest.mark.integration
def test_curl_examples_reach_the_python_receiver_as_printed(tmp_path):
    port = free_port()
    (tmp_path / "receiver.py").write_text(block("python"))
    receiver_log = tmp_path / "receiver.log"
    with open(receiver_log, "wb") as log:
        receiver = subprocess.Popen([sys.executable, "receiver.py"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "CALLBACK_SECRET": SECRET, "PORT": str(port)})
    env = {"CLIP_MODEL": "fake", "CALLBACK_SECRET": SECRET, "CALLBACK_ALLOWED_HOSTS": f"localhost:{port}"}
    try:
        with run_service("server", env, tmp_path) as service:
            subprocess.run([sys.executable, str(ROOT / "scripts" / "make_samples.py"), str(tmp_path)], check=True,
                           capture_output=True)
            lines = [line for line in block("bash").splitlines() if line.startswith("curl ") and ":8080" not in line]
            assert len(lines) == 2
            outputs = []
            for line in lines:
                runnable = line.replace("http://localhost:5001", service.url).replace("localhost:9000",
                                                                                      f"localhost:{port}")
                result = subprocess.run(["bash", "-c", runnable], cwd=tmp_path, capture_output=True, text=True,
                                        timeout=60)
                assert result.returncode == 0, (line, result.stderr)
                outputs.append(json.loads(result.stdout))
            accepted, status = outputs
            assert accepted["status"] == "queued" and status["job_id"] == accepted["job_id"]
            wait_until(lambda: f"clip {accepted['job_id']} succeeded" in receiver_log.read_text(), 20)
            record = wait_until(lambda: (r := json.loads(subprocess.run(
                ["curl", "-s", accepted["status_url"]], capture_output=True, text=True).stdout))["callback"][
                "state"] == "delivered" and r, 10)
            assert record["callback"]["last_status"] == 204 and len(record["result"]["embedding"]) == 64
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
