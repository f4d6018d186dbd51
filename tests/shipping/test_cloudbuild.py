"""cloudbuild_slim.yaml and cloudbuild_clip.yaml: cache pull, inline-cache build, Artifact Registry push."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.shipping.helpers import REPO

CONFIGS = {"cloudbuild_slim.yaml": "Dockerfile.slim", "cloudbuild_clip.yaml": "Dockerfile.cloudrun"}
AR_IMAGE = "${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPO}/${_IMAGE}"


def duration_s(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", value)
    assert match, f"Cloud Build durations are seconds with an 's': {value}"
    return float(match.group(1))


@pytest.mark.parametrize("config,dockerfile", sorted(CONFIGS.items()))
def test_pull_then_build_with_inline_cache_then_push(config, dockerfile):
    build = yaml.safe_load((REPO / config).read_text())
    pull, docker_build = build["steps"]
    cache_ref = f"{AR_IMAGE}:${{_CACHE_TAG}}"
    # The first build has no previous image: the pull must not fail the build.
    assert pull["entrypoint"] == "bash"
    assert f"docker pull {cache_ref} || exit 0" in pull["args"][-1]
    args = docker_build["args"]
    assert args[0] == "build" and args[-1] == "."
    assert f"--file={dockerfile}" in args and (REPO / dockerfile).exists()
    assert "--build-arg=BUILDKIT_INLINE_CACHE=1" in args
    assert f"--cache-from={cache_ref}" in args
    assert f"--tag={AR_IMAGE}:${{_TAG}}" in args and f"--tag={cache_ref}" in args
    assert "DOCKER_BUILDKIT=1" in docker_build["env"]
    assert set(build["images"]) == {f"{AR_IMAGE}:${{_TAG}}", cache_ref}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_sized_for_a_multi_gb_image(config):
    build = yaml.safe_load((REPO / config).read_text())
    assert build["options"]["machineType"] in {"E2_HIGHCPU_8", "E2_HIGHCPU_32", "N1_HIGHCPU_8", "N1_HIGHCPU_32"}
    assert build["options"]["diskSizeGb"] >= 150
    assert duration_s(build["timeout"]) >= 1800


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_every_substitution_used_is_defined(config):
    text = (REPO / config).read_text()
    build = yaml.safe_load(text)
    used = set(re.findall(r"\$\{(_[A-Z0-9_]+)\}", text))
    assert used <= set(build["substitutions"]), used - set(build["substitutions"])
    assert {"_REGION", "_REPO", "_IMAGE", "_TAG"} <= used
