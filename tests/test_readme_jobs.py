"""The batch-jobs example (docs/events-and-batch-jobs.md) runs as printed (the real demo CLIP model and tiny.en)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.readme_examples import page

pytestmark = pytest.mark.integration


def test_batch_jobs_example_runs_as_printed(tmp_path):
    blocks = re.findall(r"```bash\n(# batch-jobs example.*?)```", page("events-and-batch-jobs").read_text(), flags=re.S)
    (script,) = blocks
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_samples.py"), str(tmp_path)], check=True,
                   capture_output=True)
    runnable = script.replace(".venv/bin/python", sys.executable)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", runnable], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"})
    assert result.returncode == 0, result.stderr
    first = json.loads((tmp_path / "embeddings" / "part-00000-of-00001.jsonl").read_text().splitlines()[0])
    assert first["path"] == "photo.jpg" and len(first["embedding"]) == 64
    assert "-->" in result.stdout  # the SRT cues were printed
