"""Run the README's curl examples as printed (only the host:port is pointed at the test service)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

README = ROOT / "README.md"


def curl_examples(port: int) -> list[str]:
    """Every `curl ...` line in the README's bash blocks that talks to ``localhost:port``."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("curl ") and f"localhost:{port}" in line]


def run_examples(port: int, service_url: str, workdir: Path) -> list[tuple[str, str]]:
    """Run each example with ``sh`` in a directory holding photo.jpg and meeting.m4a."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_samples.py"), str(workdir)], check=True,
                   capture_output=True)
    outputs = []
    for command in curl_examples(port):
        runnable = command.replace(f"http://localhost:{port}", service_url)
        result = subprocess.run(["bash", "-c", runnable], cwd=workdir, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (command, result.stderr)
        outputs.append((command, result.stdout))
    return outputs


def assert_no_error(command: str, output: str) -> None:
    """The example printed a real answer, not an error body."""
    assert output.strip(), command
    if output.lstrip().startswith("{"):
        body = json.loads(output)
        assert "error" not in body, (command, body)
