"""Command-line entries (``python -m server|worker`` and the bake commands).

``exec_gunicorn`` replaces this process with gunicorn and the service's config;

exec (not a child process) so gunicorn's master is the process Cloud Run signals: SIGTERM
reaches it directly and the graceful shutdown starts at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def options_to_env(options: dict[str, object]) -> None:
    """Put the CLI options that were given into the environment the settings are read from."""
    for env, value in options.items():
        if value is not None and value != "":
            os.environ[env] = str(value)


def exec_gunicorn(package: str, app_uri: str) -> None:
    """Exec gunicorn with ``<package>/gunicorn_conf.py`` serving ``app_uri``."""
    config = Path(__file__).resolve().parent.parent / package / "gunicorn_conf.py"
    argv = [sys.executable, "-m", "gunicorn", "--config", str(config), app_uri]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
