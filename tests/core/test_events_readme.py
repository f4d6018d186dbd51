"""docs/events-and-batch-jobs.md, Events: its gcloud lines parse in the real gcloud CLI (offline, logged out)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.settings import settings_table
from server.settings import ServerSettings
from tests.readme_examples import code_blocks, section

GCLOUD = shutil.which("gcloud")
AUTH_ERROR = "You do not currently have an active account selected"


def events_blocks() -> list[str]:
    """The sh blocks of the Events section, in order."""
    return code_blocks(section("events-and-batch-jobs", "Events"), "sh")


def run_line(line: str, workdir: str) -> tuple[int, str]:
    """One printed line through bash and the real gcloud, with an empty configuration (no account)."""
    with tempfile.TemporaryDirectory() as config:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("CLOUDSDK_", "GOOGLE_"))}
        env.update(CLOUDSDK_CONFIG=config, CLOUDSDK_CORE_DISABLE_PROMPTS="1",
                   CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK="1", URL="https://clip-server-xxxxx-uc.a.run.app")
        done = subprocess.run(["bash", "-c", line], cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stderr


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(GCLOUD is None, reason="gcloud (Google Cloud CLI) is not on PATH")
def test_every_gcloud_line_fails_only_at_authentication(tmp_path):
    (tmp_path / "api-key.txt").write_text("0123456789abcdef")
    lines = [line for line in events_blocks()[2].splitlines() if line.startswith("gcloud ")]
    assert {line.split()[1] for line in lines} >= {"pubsub", "storage", "eventarc", "tasks"}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda line: run_line(line, str(tmp_path)), lines))
    for line, (code, stderr) in zip(lines, results):
        # Exit 2 is a parse error (unknown flag, bad value); exit 1 with this message got past parsing.
        assert code == 1 and AUTH_ERROR in stderr, (line, code, stderr[-500:])


@pytest.mark.unit
def test_events_settings_table_matches_the_code():
    events = section("events-and-batch-jobs", "Events")
    for row in settings_table(ServerSettings).splitlines():
        if row.startswith("| `EVENTS_"):
            assert row in events, row
