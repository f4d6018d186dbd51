"""Build outputs of the clients stay out of git (a `pip install ./clients/python` leaves build/ behind)."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("path", ["clients/python/build/lib/inference_client/__init__.py",
                                  "clients/python/dist/inference_client-0.1.0.tar.gz",
                                  "clients/python/inference_client.egg-info/PKG-INFO",
                                  "clients/typescript/node_modules/x/index.js",
                                  "clients/typescript/inference-client-0.1.0.tgz"])
def test_client_build_outputs_are_ignored(path):
    assert subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT).returncode == 0, path


def test_client_sources_are_not_ignored():
    for path in ("clients/python/inference_client/__init__.py", "clients/typescript/index.js"):
        assert subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT).returncode == 1, path
