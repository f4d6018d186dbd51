"""cloudbuild.yaml: one config for every service of the table, a registry cache (mode=max), the push."""

from __future__ import annotations

import re

import yaml

from scripts.services import build_args, load
from tests.shipping.helpers import REPO

AR_IMAGE = "${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPO}/${_IMAGE}"
BUILD = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())


def duration_s(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", value)
    assert match, f"Cloud Build durations are seconds with an 's': {value}"
    return float(match.group(1))


def build_step() -> dict:
    (step,) = [s for s in BUILD["steps"] if "build" in s["args"][:2]]
    return step


def test_buildx_with_a_registry_cache_that_keeps_every_stage_then_pushes():
    builder, build = BUILD["steps"]
    # The docker driver cannot export a registry cache; a docker-container builder can.
    assert builder["args"][:2] == ["buildx", "create"] and "--driver=docker-container" in builder["args"]
    args = build["args"]
    assert args[:2] == ["buildx", "build"] and args[-1] == "."
    cache = f"type=registry,ref={AR_IMAGE}:${{_CACHE_TAG}}"
    assert f"--cache-from={cache}" in args
    # mode=max: the bake stage's layers are cached too (inline cache keeps only the final stage's).
    assert f"--cache-to={cache},mode=max" in args
    assert f"--tag={AR_IMAGE}:${{_TAG}}" in args and "--push" in args
    assert "--build-arg=BUILDKIT_INLINE_CACHE=1" not in args


def test_the_dockerfile_and_the_app_are_substitutions_the_table_fills():
    args = build_step()["args"]
    assert "--file=${_DOCKERFILE}" in args
    # Every build argument the table gives a service reaches the Dockerfile.
    for service in load().values():
        for key in build_args(service):
            assert f"--build-arg={key}=${{_{key}}}" in args, key
        assert (REPO / service["dockerfile"]).exists()
    # The defaults are a real row of the table (a hand-run `gcloud builds submit` builds CLIP).
    clip = build_args(load()["clip"])
    assert {key: str(BUILD["substitutions"][f"_{key}"]) for key in clip} == clip


def test_sized_for_a_multi_gb_image_and_logs_for_a_dedicated_service_account():
    assert BUILD["options"]["machineType"] in {"E2_HIGHCPU_8", "E2_HIGHCPU_32", "N1_HIGHCPU_8", "N1_HIGHCPU_32"}
    assert BUILD["options"]["diskSizeGb"] >= 150
    assert duration_s(BUILD["timeout"]) >= 1800
    # A build run as a user-chosen service account must say where its logs go.
    assert BUILD["options"]["logging"] == "CLOUD_LOGGING_ONLY"


def test_every_substitution_used_is_defined():
    text = (REPO / "cloudbuild.yaml").read_text()
    used = set(re.findall(r"\$\{(_[A-Z0-9_]+)\}", text))
    assert used <= set(BUILD["substitutions"]), used - set(BUILD["substitutions"])
    assert {"_REGION", "_REPO", "_IMAGE", "_TAG", "_DOCKERFILE", "_APP"} <= used
