"""What every bake command shares: pinning a download to a commit, and ``--from`` (a local model into the image).

Pinning: a model named ``NAME@<40-hex commit>`` is fetched at exactly that commit; each app's
bake decides whether an unpinned name is refused or only warned about.

``--from``:
A team's fine-tuned or private checkpoint, or any model the build must not download, enters
the build context under ``model-input/`` and is copied to the path the model setting names
(``WHISPER_MODEL=/models/whisper/custom``, ``CLIP_PRETRAINED=/models/clip/custom/ft.pt``). That
path must lie under MODELS_DIR: the runtime stage copies MODELS_DIR only, so a path elsewhere
would name weights the image does not have.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

COMMIT = re.compile(r"[0-9a-f]{40}")


class UnpinnedModel(ValueError):
    """A download not pinned to a commit where the bake must pin one."""


def split_revision(name: str) -> tuple[str, str | None]:
    """``org/repo@rev`` -> (``org/repo``, ``rev``); no ``@`` -> (name, None)."""
    model, sep, revision = name.partition("@")
    return model, (revision if sep else None)


def is_commit(revision: str | None) -> bool:
    """A full 40-hex commit hash (a branch or tag can move; a commit cannot)."""
    return revision is not None and COMMIT.fullmatch(revision) is not None


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


def bake_command(prog: str, description: str, target: Path, models_dir: str,
                 bake_default: Callable[[Path], None], argv: list[str] | None = None) -> None:
    """A bake command's CLI: ``--from PATH`` (or BAKE_FROM) copies a local model to ``target``, else
    ``bake_default(target)`` bakes the configured one; exits 0, or 2 with one clear line for a bad source."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--from", dest="source", default=os.environ.get("BAKE_FROM") or None,
                        help="a local model file or directory to copy into the image (also BAKE_FROM)")
    args = parser.parse_args(argv)
    try:
        if args.source:
            copy_model(args.source, target, models_dir)
        else:
            bake_default(target)
    except BadBakeSource as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"baked into {target}")
