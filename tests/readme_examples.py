"""Run the documentation's examples as printed (only the host:port is pointed at the test service).

The README is the front door; the rest lives in ``docs/``, one page per subject. ``page("api")``
is ``docs/api.md``, ``page("README")`` the README itself.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"


def page(name: str) -> Path:
    """A documentation page by name: ``"README"`` or a page of ``docs/`` without ``.md``."""
    return README if name == "README" else DOCS / f"{name}.md"


def pages() -> list[Path]:
    """The README, then every page of ``docs/``."""
    return [README, *sorted(DOCS.glob("*.md"))]


def section(name: str, title: str) -> str:
    """A page's text from its heading ``## title...`` (else ``# title...``) to the next ``## `` or the end."""
    text = "\n" + page(name).read_text()
    match = re.search(rf"\n## {re.escape(title)}", text) or re.search(rf"\n# {re.escape(title)}", text)
    assert match, f"no heading {title!r} in {page(name).name}"
    end = text.find("\n## ", match.end())
    return text[match.start():] if end == -1 else text[match.start():end]


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of one language, in order."""
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def curl_examples(port: int) -> list[str]:
    """Every `curl ...` line in the bash blocks of the README and docs/ that talks to ``localhost:port``, once."""
    lines = [line.strip() for path in pages() for block in code_blocks(path.read_text(), "bash")
             for line in block.splitlines()]
    return list(dict.fromkeys(line for line in lines if line.startswith("curl ") and f"localhost:{port}" in line))


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
