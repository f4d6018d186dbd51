"""The README's CLIP curl examples work as printed against a real server."""

import json

import pytest

from tests.readme_examples import assert_no_error, curl_examples, run_examples

pytestmark = pytest.mark.integration


def test_readme_clip_examples_work_as_printed(clip_service, tmp_path):
    assert len(curl_examples(5001)) >= 5
    outputs = run_examples(5001, clip_service.url, tmp_path)
    for command, output in outputs:
        assert_no_error(command, output)
    classify = json.loads(next(out for cmd, out in outputs if "/classify" in cmd))
    assert classify["labels"][0]["label"] == "red circle"  # the demo model knows a red circle
