"""ShapesCLIP-Tiny: a small real CLIP model, trained in-repo on coloured shapes, shipped as the default."""

from pathlib import Path

MODEL_NAME = "ShapesCLIP-Tiny"

_HERE = Path(__file__).resolve().parent


def config_path():
    """Return the path of the model's open_clip config JSON."""
    return _HERE / f"{MODEL_NAME}.json"


def checkpoint_path():
    """Return the path of the committed fp16 safetensors weights."""
    return _HERE / f"{MODEL_NAME}.safetensors"


def register():
    """Make MODEL_NAME known to open_clip (idempotent); returns MODEL_NAME."""
    # Imported here so that importing this package never pulls in torch.
    import open_clip

    if MODEL_NAME not in open_clip.list_models():
        # add_model_config appends to a global search path on every call, so only once.
        open_clip.add_model_config(config_path())
    return MODEL_NAME
