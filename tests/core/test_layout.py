"""The layout docs/development.md describes: core/ in rooms, both apps shaped alike, every app of
services.toml holding what the shipping kit runs.

A file dropped at core/'s top level, or a worker that grows its own place for make_backend, makes
the layout lie to the next newcomer; these checks fail first.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.declaration import declared
from scripts.services import load as load_table

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ROOMS = {"model", "web", "deferred", "from_storage"}
# What every room uses, and capacity.py, which the deploy kit imports alone (standard library only);
# everything else lives in a room.
CORE_TOP = {"__init__.py", "settings.py", "errors.py", "request_context.py", "declaration.py", "launcher.py",
            "gunicorn_conf.py", "capacity.py"}


def test_core_is_a_few_rooms_and_the_files_every_room_uses():
    top = {p.name for p in (ROOT / "core").iterdir() if p.suffix == ".py"}
    rooms = {p.name for p in (ROOT / "core").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert top == CORE_TOP
    assert rooms == ROOMS
    for room in ROOMS:
        assert (ROOT / "core" / room / "__init__.py").read_text().startswith('"""'), room  # says what it holds


SERVICES = load_table()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_app_of_the_service_table_has_what_the_kit_runs(name):
    """The images run `python -m PACKAGE` and `PACKAGE.bake`, the jobs `PACKAGE.job`; the app is one
    Declaration (its settings are what docs/configuration.md must list: test_http_core.py)."""
    package = SERVICES[name]["package"]
    for module in ("__main__", "bake", "job"):
        path = ROOT / package
        assert (path / f"{module}.py").is_file() or (path / module / "__main__.py").is_file(), (
            f"{package}/{module}.py (services.toml: {name})")
    # The render sizes Cloud Run's concurrency by the processes gunicorn will start: the same rule.
    assert (SERVICES[name]["cloudrun"]["processes_per_gpu"] or None) == declared(package).processes_per_gpu
    assert SERVICES[name]["cloudrun"].get("cpus_per_process") == declared(package).cpus_per_process


def test_both_apps_have_the_same_layout():
    for app in ("server", "worker"):
        for name in ("app.py", "routes.py", "openai_routes.py", "events.py", "job.py", "service.py", "bake.py",
                     "settings.py", "backends/__init__.py"):
            assert (ROOT / app / name).is_file(), f"{app}/{name}"
    from server.backends import make_backend as clip_backend
    from worker.backends import make_backend as whisper_backend

    assert callable(clip_backend) and callable(whisper_backend)


@pytest.mark.parametrize("module", ["core.model.runner", "core.model.batcher", "core.model.admission",
                                    "server.service", "worker.service", "server.backends", "worker.backends"])
def test_the_model_path_and_the_services_import_no_web_framework(module):
    """Every door reaches the model through the services; none of that path may need Flask."""
    code = f"import sys, {module}; sys.exit('flask' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0
