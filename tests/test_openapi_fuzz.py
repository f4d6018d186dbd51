"""Schemathesis, --checks all, against each app of tests/openapi_fuzz.py: 0 failures, every operation run."""

from __future__ import annotations

import re

import pytest

from tests.conftest import APP_PACKAGES, run_service
from tests.openapi_fuzz import APPS, fuzz

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_every_app_of_the_table_is_fuzzed():
    assert {app.package for app in APPS} == set(APP_PACKAGES)


@pytest.mark.parametrize("app", APPS, ids=[app.name for app in APPS])
def test_the_document_survives_schemathesis(app, tmp_path, request):
    env = dict(app.env)
    if app.models_fixture:
        env["MODELS_DIR"] = request.getfixturevalue(app.models_fixture)
    if app.events:
        env["EVENTS_OUTPUT"] = str(tmp_path / "events")
    with run_service(app.package, env, tmp_path) as running:
        result = fuzz(running.url)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-12000:]
    selected, total = re.search(r"Selected: (\d+)/(\d+)", report).groups()
    assert selected == total and f"Tested: {total}" in report, report[-3000:]  # every operation, none skipped
