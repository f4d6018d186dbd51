"""``python -m server.bake``: fetch the configured CLIP weights into MODELS_DIR (image build time).

At run time the service reads only what this wrote (``$MODELS_DIR/clip/<slug>/`` and its
``manifest.json``) with hub access off. Idempotent: an existing manifest for the same model is
kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from core.launcher import options_to_env
from server.models import MANIFEST, ClipModelSpec, resolve_spec, write_manifest
from server.settings import ServerSettings


def _bake_demo(spec: ClipModelSpec, target: Path) -> None:
    from server import demo

    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(demo.config_path(), target / demo.config_path().name)
    shutil.copy2(demo.checkpoint_path(), target / demo.checkpoint_path().name)
    write_manifest(target, family="demo", name=spec.name, file=demo.checkpoint_path().name)


def _bake_open_clip(spec: ClipModelSpec, target: Path) -> None:
    import open_clip

    # open_clip downloads the tag's file (HF hub or URL) into this cache and, at run time with
    # HF_HUB_OFFLINE=1, finds it there together with the tag's QuickGELU and mean/std settings.
    cache = target / "cache"
    open_clip.create_model_and_transforms(spec.name, pretrained=spec.pretrained, cache_dir=str(cache))
    write_manifest(target, family="open_clip", name=spec.name, pretrained=spec.pretrained, cache_dir="cache")


def _bake_hf(spec: ClipModelSpec, target: Path) -> None:
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    with tempfile.TemporaryDirectory() as cache:
        CLIPModel.from_pretrained(spec.name, cache_dir=cache).save_pretrained(target)
        CLIPImageProcessor.from_pretrained(spec.name, cache_dir=cache).save_pretrained(target)
        AutoTokenizer.from_pretrained(spec.name, cache_dir=cache).save_pretrained(target)
    write_manifest(target, family="hf", name=spec.name)


def bake(settings: ServerSettings, force: bool = False) -> Path | None:
    """Write the weights ``settings`` name into MODELS_DIR; returns the directory (None: nothing to do)."""
    spec = resolve_spec(settings)
    if spec.family != "demo" and not spec.needs_bake:
        print(f"{spec.label}: nothing to bake (fake, random or local weights)")
        return None
    target = spec.baked_dir(settings.models_dir)
    if (target / MANIFEST).is_file() and not force:
        print(f"{spec.label}: already baked in {target}")
        return target
    if target.exists():
        shutil.rmtree(target)
    {"demo": _bake_demo, "open_clip": _bake_open_clip, "hf": _bake_hf}[spec.family](spec, target)
    print(f"{spec.label}: baked into {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    """CLI entry: options override CLIP_MODEL / CLIP_PRETRAINED / MODELS_DIR."""
    parser = argparse.ArgumentParser(prog="python -m server.bake", description=__doc__)
    parser.add_argument("--model", help="CLIP_MODEL (default from the environment, else demo)")
    parser.add_argument("--pretrained", help="CLIP_PRETRAINED")
    parser.add_argument("--models-dir", help="MODELS_DIR")
    parser.add_argument("--force", action="store_true", help="bake again even if present")
    args = parser.parse_args(argv)
    options_to_env({"CLIP_MODEL": args.model, "CLIP_PRETRAINED": args.pretrained, "MODELS_DIR": args.models_dir})
    bake(ServerSettings.from_env(), force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
