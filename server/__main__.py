"""``python -m server [--model vit-b-32] [--pretrained openai] [--port 5001]``: start the CLIP server."""

from __future__ import annotations

import argparse
import sys

from core.launcher import exec_gunicorn, options_to_env
from core.settings import SettingsError
from server.backends import make_backend
from server.models import ModelNotBaked
from server.settings import ServerSettings


def main(argv: list[str] | None = None) -> None:
    """Parse CLI options into the environment, validate the settings, exec gunicorn."""
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--model", help="CLIP_MODEL: demo, vit-b-32, ViT-L-14, hf:ORG/NAME, ...")
    parser.add_argument("--pretrained", help="CLIP_PRETRAINED: openai, a tag, a checkpoint path, random")
    parser.add_argument("--port", type=int, help="PORT (default 5001)")
    parser.add_argument("--device", help="CLIP_DEVICE: auto, cuda, cpu")
    args = parser.parse_args(argv)
    options_to_env({"CLIP_MODEL": args.model, "CLIP_PRETRAINED": args.pretrained, "PORT": args.port,
                    "CLIP_DEVICE": args.device})
    try:  # fail here, in the foreground, with one clear line: a bad setting or missing weights
        make_backend(ServerSettings.from_env()).check_weights()
    except (SettingsError, ModelNotBaked) as err:
        sys.exit(f"error: {err}")
    exec_gunicorn("server", "server.app:create_app()")


if __name__ == "__main__":
    main()
