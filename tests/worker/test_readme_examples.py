"""The Whisper curl examples of the README and docs/ work as printed against a real worker."""

import pytest

from tests.readme_examples import assert_no_error, curl_examples, run_examples

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_readme_worker_examples_work_as_printed(whisper_service, tmp_path):
    assert len(curl_examples(8080)) >= 4
    outputs = run_examples(8080, whisper_service.url, tmp_path)
    for command, output in outputs:
        assert_no_error(command, output)
    srt = next(out for cmd, out in outputs if "response_format=srt" in cmd)
    assert srt.startswith("1\n00:00:0") and "report" in srt.lower()
