"""``python -m <package>``: every declared service's launcher (core/declaration.py).

It puts the command-line options into the environment, validates the settings and the weights in
the foreground (one clear line on error), then execs gunicorn with core/gunicorn_conf.py, which
finds the service again through ``APP_PACKAGE``. exec (not a child process) so gunicorn's master
is the process Cloud Run signals: SIGTERM reaches it directly and the graceful shutdown starts at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from core.errors import ModelNotBaked
from core.settings import SettingsError

# The package of the service gunicorn serves; core/gunicorn_conf.py reads it.
APP_PACKAGE_ENV = "APP_PACKAGE"


def options_to_env(options: dict[str, object]) -> None:
    """Put the CLI options that were given into the environment the settings are read from."""
    for env, value in options.items():
        if value is not None and value != "":
            os.environ[env] = str(value)


def main(declaration, argv: list[str] | None = None) -> None:
    """Parse the service's options into the environment, check settings and weights, exec gunicorn."""
    port = declaration.settings.__dataclass_fields__["port"].default
    parser = argparse.ArgumentParser(prog=f"python -m {declaration.package}",
                                     description=f"Start the {declaration.title} ({declaration.description})")
    for option in declaration.options:
        parser.add_argument(option.flag, dest=option.env, help=option.help)
    parser.add_argument("--port", dest="PORT", type=int, help=f"PORT (default {port})")
    options_to_env(vars(parser.parse_args(argv)))
    try:  # fail here, in the foreground, with one clear line: a bad setting or missing weights
        declaration.make_backend(declaration.settings.from_env()).check_weights()
    except (SettingsError, ModelNotBaked) as err:
        sys.exit(f"error: {err}")
    exec_gunicorn(declaration.package)


def exec_gunicorn(package: str) -> None:
    """Exec gunicorn serving ``package``'s app with core/gunicorn_conf.py."""
    os.environ[APP_PACKAGE_ENV] = package
    argv = [sys.executable, "-m", "gunicorn", "--config", "python:core.gunicorn_conf"]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
