"""Which CLIP model a configuration names, and where its baked weights live.

Shared by the bake command (build time, writes) and the backends (run time, reads), so both
agree on one directory layout: ``$MODELS_DIR/clip/<slug>/`` with a ``manifest.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelNotBaked
from server.demo import MODEL_NAME as DEMO_MODEL_NAME
from server.settings import ServerSettings

# Friendly CLI spellings (``--model vit-b-32``) -> open_clip architecture names.
ALIASES = {
    "vit-b-32": "ViT-B-32", "vit-b-16": "ViT-B-16", "vit-l-14": "ViT-L-14",
    "vit-l-14-336": "ViT-L-14-336", "vit-h-14": "ViT-H-14", "rn50": "RN50",
}
MANIFEST = "manifest.json"
BAKE_COMMAND = "python -m server.bake"


@dataclass(frozen=True)
class ClipModelSpec:
    """A resolved model choice: family, architecture or repo, and weights tag."""

    family: str  # "open_clip" | "hf" | "demo" | "fake" | "sim"
    name: str  # open_clip architecture, HF repo id or local HF directory
    pretrained: str | None  # open_clip tag, checkpoint path, "random", or None

    @property
    def label(self) -> str:
        """How /health and responses name the model."""
        if self.family == "hf":
            return f"hf:{self.name}"
        if self.family == "open_clip" and self.pretrained:
            tag = Path(self.pretrained).name if is_local_path(self.pretrained) else self.pretrained
            return f"{self.name}/{tag}"
        return self.name

    @property
    def slug(self) -> str:
        """Directory name under MODELS_DIR/clip."""
        raw = self.name if self.family != "open_clip" else f"{self.name}__{self.pretrained}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "__", f"{self.family}__{raw}")

    def baked_dir(self, models_dir: str | Path) -> Path:
        """Where bake writes and the service reads this model."""
        return Path(models_dir) / "clip" / self.slug

    @property
    def needs_bake(self) -> bool:
        """False when weights come from the repo, a local path, or nowhere (random/fake)."""
        if self.family in ("fake", "demo"):
            return False
        if self.family == "hf":
            return not is_local_path(self.name)
        return self.pretrained not in (None, "random") and not is_local_path(self.pretrained)


def is_local_path(value: str | None) -> bool:
    """True for values that point at the filesystem rather than a tag or repo id."""
    return bool(value) and (value.startswith(("/", "./", "../", "~")) or Path(value).suffix in (
        ".pt", ".pth", ".bin", ".safetensors"))


def resolve_spec(settings: ServerSettings) -> ClipModelSpec:
    """CLIP_MODEL + CLIP_PRETRAINED -> ClipModelSpec (no imports of torch or open_clip)."""
    model = settings.clip_model.strip()
    if model.lower() == "fake":
        return ClipModelSpec("fake", "fake", None)
    if model.lower() == "demo":
        # Only a local checkpoint means anything to the demo: a tag (Dockerfile.cloudrun's default
        # CLIP_PRETRAINED=openai) would be read as a file name and the image would never get ready.
        checkpoint = settings.clip_pretrained if is_local_path(settings.clip_pretrained) else None
        return ClipModelSpec("demo", DEMO_MODEL_NAME, checkpoint)
    if model.lower().startswith("sim:"):  # simulated accelerator (server/backends/sim.py)
        return ClipModelSpec("sim", model, None)
    if model.lower().startswith("hf:"):
        return ClipModelSpec("hf", model[3:], None)
    name = ALIASES.get(model.lower(), model)
    return ClipModelSpec("open_clip", name, settings.clip_pretrained or "openai")


def read_manifest(directory: Path) -> dict:
    """The manifest bake wrote, or ModelNotBaked naming the path and the bake command."""
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelNotBaked(
            f"model weights not found: {path} does not exist. Bake them at image build time with "
            f"`{BAKE_COMMAND}` (same CLIP_MODEL/CLIP_PRETRAINED/MODELS_DIR), or point MODELS_DIR "
            "at a directory that has them.")
    return json.loads(path.read_text())


def write_manifest(directory: Path, **fields) -> None:
    """Record what bake put in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).write_text(json.dumps(fields, indent=2) + "\n")
