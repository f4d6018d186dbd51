"""``--from`` of the bake commands: put a model from a local file or directory into the image.

A team's fine-tuned or private checkpoint, or any model the build must not download, enters
the build context under ``model-input/`` and is copied to the path the model setting names
(``WHISPER_MODEL=/models/whisper/custom``, ``CLIP_PRETRAINED=/models/clip/custom/ft.pt``). That
path must lie under MODELS_DIR: the runtime stage copies MODELS_DIR only, so a path elsewhere
would name weights the image does not have.
"""

from __future__ import annotations

import shutil
from pathlib import Path


class BadBakeSource(ValueError):
    """The source or the destination of a ``--from`` bake cannot work in an image."""


def copy_model(source: str | Path, destination: str | Path, models_dir: str | Path) -> Path:
    """Copy ``source`` (file or directory) to ``destination``, which must be under ``models_dir``."""
    source, destination = Path(source).expanduser(), Path(destination).expanduser()
    root = Path(models_dir).expanduser().resolve()
    if not source.exists():
        raise BadBakeSource(f"--from {source}: no such file or directory")
    if not destination.resolve().is_relative_to(root):
        raise BadBakeSource(f"{destination} is not under MODELS_DIR={root}: the image keeps only MODELS_DIR; "
                            f"name a path such as {root}/<service>/<name>")
    if destination.is_dir():
        shutil.rmtree(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, destination)
    else:
        shutil.copy2(source, destination)
    return destination
