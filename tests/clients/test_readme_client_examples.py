"""The client examples (docs/clients.md, docs/api.md) run as printed (only localhost URLs point at the services)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clients.conftest import API_KEY
from tests.conftest import ROOT
from tests.readme_examples import pages, section

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of a language."""
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """photo.jpg and meeting.m4a, as `make samples` writes them."""
    root = tmp_path_factory.mktemp("readme-samples")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_samples.py"), str(root)], check=True,
                   capture_output=True)
    return root


def pointed(code: str, clip_server, worker) -> str:
    return code.replace("http://localhost:5001", clip_server.url).replace("http://localhost:8080", worker.url)


def run(command: list[str], cwd: Path, env: dict | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout


def test_python_client_examples(clip_server, workers, samples):
    env = {"CLIP_SERVER_API_KEY": API_KEY, "WHISPER_WORKER_API_KEY": API_KEY,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    text = section("clients", "Python client")
    python_blocks = blocks(text, "python")
    assert len(python_blocks) == 2
    first = run([sys.executable, "-c", pointed(python_blocks[0], clip_server, workers[0])], samples, env)
    assert "ShapesCLIP-Tiny 64 1 2" in first and "Label(label='red circle'" in first
    assert "00:00:00,000 -->" in first and "quarterly" in first.lower() and "400 invalid_image" in first
    fan_out = run([sys.executable, "-c", pointed(python_blocks[1], clip_server, workers[0])], samples, env)
    assert "quarterly" in fan_out.lower() and "'succeeded': 1" in fan_out
    cli = next(block for block in blocks(text, "bash") if "inference_client transcribe" in block)
    subtitles = run(["bash", "-euc", pointed(cli, clip_server, workers[0])], samples, env)
    assert subtitles.startswith("1\n00:00:00,000 -->") and "quarterly" in subtitles.lower()


def test_node_examples_with_the_package_installed_as_the_docs_say(clip_server, workers, samples, tmp_path):
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js 18+ and npm are required: run `make setup` (scripts/install-system-deps.sh)"
    app = tmp_path / "app"
    app.mkdir()
    for name in ("photo.jpg",):
        shutil.copy(samples / name, app / name)
    # `npm install ./clients/typescript`, from an app's folder; --offline: the package has no dependencies.
    run([npm, "install", "--offline", "--no-audit", "--no-fund", str(ROOT / "clients" / "typescript")], app)
    env = {"CLIP_SERVER_URL": clip_server.url, "CLIP_SERVER_API_KEY": API_KEY}

    example = blocks(section("clients", "TypeScript / Node client"), "js")
    assert len(example) == 1
    (app / "example.mjs").write_text(example[0])
    output = run([node, "example.mjs"], app, env)
    assert output.splitlines()[0] == "64 1 1" and "red circle" in output and "400 invalid_image" in output

    route = blocks(section("api", "CLIP server"), "js")
    assert len(route) == 1 and "CLIP_SERVER_URL" in route[0]
    assert all("CLIP_API_KEY" not in path.read_text() for path in pages())
    (app / "route.mjs").write_text(route[0])
    (app / "call-route.mjs").write_text("""
import { readFile } from "node:fs/promises";
import { POST } from "./route.mjs";
for (const bytes of [await readFile("photo.jpg"), new TextEncoder().encode("not an image")]) {
  const form = new FormData();
  form.append("image", new File([bytes], "upload.jpg"));
  const res = await POST(new Request("http://localhost/api/embed", { method: "POST", body: form }));
  const body = await res.json();
  console.log(res.status, body.embedding ? body.embedding.length : body.error.code);
}
""")
    assert run([node, "call-route.mjs"], app, env).splitlines() == ["200 64", "400 invalid_image"]
    unset = subprocess.run([node, "call-route.mjs"], cwd=app, capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if k != "CLIP_SERVER_URL"})
    assert unset.returncode != 0 and "CLIP_SERVER_URL is not set" in unset.stderr
