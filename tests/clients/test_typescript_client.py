"""The TypeScript client's own tests (`node --test`) against a real CLIP server (gunicorn, demo model)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.clients.conftest import API_KEY
from tests.conftest import ROOT

PACKAGE = ROOT / "clients" / "typescript"


@pytest.mark.integration
def test_node_tests_pass_against_a_running_server(clip_server, rate_limited_server, red_circle):
    node = shutil.which("node")
    assert node, "Node.js 18+ is required for this test: run `make setup` (scripts/install-system-deps.sh)"
    env = {**os.environ, "CLIP_SERVER_URL": clip_server.url, "CLIP_SERVER_API_KEY": API_KEY,
           "CLIP_RATE_LIMITED_URL": rate_limited_server.url, "CLIP_TEST_IMAGE": str(red_circle)}
    result = subprocess.run([node, "--test", "test/client.test.js"], cwd=PACKAGE, env=env, capture_output=True,
                            text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    counts = dict(re.findall(r"^# (pass|fail|skipped) (\d+)$", output, flags=re.M))
    assert counts == {"pass": "11", "fail": "0", "skipped": "0"}, output  # none skipped: all ran against the server


@pytest.mark.unit
def test_package_is_dependency_free_esm_with_types():
    import json

    manifest = json.loads((PACKAGE / "package.json").read_text())
    assert manifest["type"] == "module" and manifest["exports"]["."]["types"] == "./index.d.ts"
    assert not manifest.get("dependencies")
    assert all((PACKAGE / name).is_file() for name in manifest["files"])
