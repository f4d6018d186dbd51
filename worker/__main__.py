"""``python -m worker [--model small] [--port 8080]``: start the Whisper transcription worker."""

from __future__ import annotations

import argparse
import sys

from core.errors import ModelNotBaked
from core.launcher import exec_gunicorn, options_to_env
from core.settings import SettingsError
from worker.models import resolve_model_dir
from worker.settings import WorkerSettings


def main(argv: list[str] | None = None) -> None:
    """Parse CLI options into the environment, validate the settings and model, exec gunicorn."""
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--model", help="WHISPER_MODEL: tiny.en, small, large-v3, or a model directory")
    parser.add_argument("--port", type=int, help="PORT (default 8080)")
    parser.add_argument("--device", help="WHISPER_DEVICE: auto, cuda, cpu")
    args = parser.parse_args(argv)
    options_to_env({"WHISPER_MODEL": args.model, "PORT": args.port, "WHISPER_DEVICE": args.device})
    try:  # fail here, in the foreground, with one clear line: a bad setting or a missing model
        settings = WorkerSettings.from_env()
        if settings.whisper_model != "fake":  # the test stand-in has no weights
            resolve_model_dir(settings)
    except (SettingsError, ModelNotBaked) as err:
        sys.exit(f"error: {err}")
    exec_gunicorn("worker", "worker.app:create_app()")


if __name__ == "__main__":
    main()
