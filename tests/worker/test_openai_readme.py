"""docs/api.md's OpenAI SDK snippet for the worker runs as printed (only the host:port changes)."""

from __future__ import annotations

import pytest

from tests.server.test_openai_readme import run_snippet

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_readme_worker_sdk_snippet_runs_as_printed(whisper_service, tmp_path):
    srt = run_snippet(8080, whisper_service.url, tmp_path)
    assert srt.startswith("1\n00:00:0") and "report" in srt.lower()
