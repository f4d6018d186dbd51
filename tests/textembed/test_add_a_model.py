"""docs/add-a-model.md is true: textembed/ is what its steps make, and its line count is the one printed."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import APP_PACKAGES, ROOT

pytestmark = pytest.mark.unit
GUIDE = (ROOT / "docs" / "add-a-model.md").read_text()


def test_every_file_the_steps_name_is_in_the_example():
    named = set(re.findall(r"\*\*`?([a-z_]+\.py)`?", GUIDE))
    named |= set(re.findall(r"`(__main__\.py|job\.py|bake\.py)`", GUIDE))
    assert {"settings.py", "backend.py", "app.py", "__main__.py", "job.py", "bake.py"} <= named
    for name in named:
        assert (ROOT / "textembed" / name).is_file(), name


def test_the_example_is_built_as_the_steps_say():
    from core.declaration import Declaration, declared
    from core.model.backend import BaseBackend
    from textembed import app, backend

    assert isinstance(app.TEXTEMBED, Declaration) and declared("textembed") is app.TEXTEMBED
    assert issubclass(backend.SentenceBackend, BaseBackend)
    assert app.create_app == app.TEXTEMBED.create_app
    assert "textembed" in APP_PACKAGES
    assert (ROOT / "requirements" / "textembed.txt").is_file() and (ROOT / "requirements" / "textembed.lock").is_file()


def test_the_printed_line_count_is_the_commands():
    command = re.search(r"```bash\n(grep .*?)\n```", GUIDE).group(1)
    lines = int(subprocess.run(["sh", "-c", command], cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    printed = int(re.search(r"app code is \*\*(\d+) lines\*\*", GUIDE).group(1))
    assert lines == printed <= 100
