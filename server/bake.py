"""``python -m server.bake``: fetch the configured CLIP weights into MODELS_DIR (image build time).

At run time the service reads only what this wrote (``$MODELS_DIR/clip/<slug>/`` and its
``manifest.json``) with hub access off. Idempotent: an existing manifest for the same model is
kept unless ``--force``. Hugging Face models are pinned to a commit: ``CLIP_MODEL=hf:org/repo@<40-hex
commit>``; an unpinned ``hf:`` model is refused unless ``--allow-unpinned`` (BAKE_ALLOW_UNPINNED=1).
Random weights bake a manifest only (the image records what it serves). ``--from PATH`` (BAKE_FROM)
bakes a local checkpoint or Hugging Face directory, a team's own model, to the local path
CLIP_PRETRAINED (open_clip) or CLIP_MODEL=hf:<path> names, under MODELS_DIR (core/model/bake_source.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from core.launcher import options_to_env
from core.model.bake_source import BadBakeSource, UnpinnedModel, copy_model, is_commit, split_revision
from server.models import MANIFEST, ClipModelSpec, is_local_path, resolve_spec, write_manifest
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


def check_pinned(spec: ClipModelSpec, allow_unpinned: bool) -> None:
    """Refuse an ``hf:`` download that is not pinned to a full commit hash (before anything is fetched)."""
    if spec.family != "hf" or not spec.needs_bake:
        return
    repo, revision = split_revision(spec.name)
    if is_commit(revision):
        return
    what = f"revision {revision!r} is a branch or tag, not a commit" if revision else "no revision"
    if not allow_unpinned:
        raise UnpinnedModel(
            f"CLIP_MODEL=hf:{spec.name}: {what}. Pin it to a commit, e.g. hf:{repo}@<40-hex commit "
            f"from https://huggingface.co/{repo}/commits/main>, or bake it unpinned with --allow-unpinned")
    print(f"warning: hf:{spec.name} is not pinned ({what}); the bake takes whatever the hub serves now")


def _bake_hf(spec: ClipModelSpec, target: Path) -> None:
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    repo, revision = split_revision(spec.name)
    with tempfile.TemporaryDirectory() as cache:
        for loader in (CLIPModel, CLIPImageProcessor, AutoTokenizer):
            loader.from_pretrained(repo, revision=revision, cache_dir=cache).save_pretrained(target)
        # The hub cache names the commit it served: recorded, so an unpinned bake can be pinned later.
        snapshots = sorted(p.name for p in Path(cache).glob("models--*/snapshots/*"))
    write_manifest(target, family="hf", name=repo, revision=revision,
                   resolved_commit=snapshots[0] if snapshots else None)


def bake(settings: ServerSettings, force: bool = False, allow_unpinned: bool = False) -> Path | None:
    """Write the weights ``settings`` name into MODELS_DIR; returns the directory (None: nothing to do)."""
    spec = resolve_spec(settings)
    check_pinned(spec, allow_unpinned)
    target = spec.baked_dir(settings.models_dir)
    if spec.family == "open_clip" and spec.pretrained == "random":
        # Nothing to load, but the image says what it serves (and its MODELS_DIR is not empty).
        write_manifest(target, family="open_clip", name=spec.name, pretrained="random")
        print(f"{spec.label}: random weights, manifest only in {target}")
        return target
    if spec.family != "demo" and not spec.needs_bake:
        print(f"{spec.label}: nothing to bake (fake or local weights; --from copies local ones)")
        return None
    if (target / MANIFEST).is_file() and not force:
        print(f"{spec.label}: already baked in {target}")
        return target
    if target.exists():
        shutil.rmtree(target)
    {"demo": _bake_demo, "open_clip": _bake_open_clip, "hf": _bake_hf}[spec.family](spec, target)
    print(f"{spec.label}: baked into {target}")
    return target


def bake_from(settings: ServerSettings, source: str) -> Path:
    """Copy ``source`` to the local path the settings name (a checkpoint file or an HF directory)."""
    spec = resolve_spec(settings)
    if spec.family == "hf" and is_local_path(spec.name):
        destination = spec.name
    elif spec.family in ("open_clip", "demo") and is_local_path(spec.pretrained):
        destination = spec.pretrained
    else:
        raise BadBakeSource(f"--from {source}: CLIP_MODEL/CLIP_PRETRAINED must name the local path to copy it to "
                            "(CLIP_PRETRAINED=/models/clip/<name>/<file>.pt or CLIP_MODEL=hf:/models/clip/<name>)")
    target = copy_model(source, destination, settings.models_dir)
    print(f"{source}: baked into {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    """CLI entry: options override CLIP_MODEL / CLIP_PRETRAINED / MODELS_DIR."""
    parser = argparse.ArgumentParser(prog="python -m server.bake", description=__doc__)
    parser.add_argument("--model", help="CLIP_MODEL (default from the environment, else demo)")
    parser.add_argument("--pretrained", help="CLIP_PRETRAINED")
    parser.add_argument("--models-dir", help="MODELS_DIR")
    parser.add_argument("--force", action="store_true", help="bake again even if present")
    parser.add_argument("--allow-unpinned", action="store_true",
                        help="bake an hf: model without a commit revision (also BAKE_ALLOW_UNPINNED=1)")
    parser.add_argument("--from", dest="source", default=os.environ.get("BAKE_FROM") or None,
                        help="a local checkpoint file or HF directory to copy to the path the settings name "
                             "(also BAKE_FROM)")
    args = parser.parse_args(argv)
    options_to_env({"CLIP_MODEL": args.model, "CLIP_PRETRAINED": args.pretrained, "MODELS_DIR": args.models_dir})
    allow = args.allow_unpinned or os.environ.get("BAKE_ALLOW_UNPINNED", "") in ("1", "true")
    try:
        if args.source:
            bake_from(ServerSettings.from_env(), args.source)
            return 0
        bake(ServerSettings.from_env(), force=args.force, allow_unpinned=allow)
    except (UnpinnedModel, BadBakeSource) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
