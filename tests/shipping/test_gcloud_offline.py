"""The real gcloud CLI, offline and logged out, parses every command the deploy script would run.

With an empty CLOUDSDK_CONFIG and no credentials, gcloud 528 exits 2 on a command-line it cannot
parse (unknown flag, bad value) and 1 once it gets as far as needing an account. Some validation
(startup-probe keys, a Cloud Build config's fields) also exits 1 but with its own message, so a
command passes only with exit 1 *and* the "no active account" message.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.shipping.helpers import PROJECT, REPO, SCENARIO_ENV, dry_run_lines, scenario_args

GCLOUD = shutil.which("gcloud")
pytestmark = pytest.mark.skipif(GCLOUD is None, reason="gcloud (Google Cloud CLI) is not on PATH")

AUTH_ERROR = "You do not currently have an active account selected"
# Valid except for one misspelled flag / one bad value: gcloud must refuse these while parsing.
MISSPELLED = (f"gcloud run deploy clip-server --image=us-docker.pkg.dev/{PROJECT}/r/i:t "
              f"--project={PROJECT} --region=us-central1 --gpu=1 --gpu-typ=nvidia-l4 --quiet")
BAD_VALUE = (f"gcloud run deploy clip-server --image=us-docker.pkg.dev/{PROJECT}/r/i:t "
             f"--project={PROJECT} --region=us-central1 --concurrency=lots --quiet")
BAD_BUILD_CONFIG = "machineType: E2_HIGHCPU_8"


def run_gcloud(line: str) -> tuple[int, str]:
    """Run one printed command line through the real gcloud, isolated and without credentials."""
    argv = shlex.split(line)
    assert argv[0] == "gcloud", line
    with tempfile.TemporaryDirectory() as config:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("CLOUDSDK_", "GOOGLE_", "GCLOUD_"))}
        env.update(CLOUDSDK_CONFIG=config, CLOUDSDK_CORE_DISABLE_PROMPTS="1",
                   CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK="1")
        result = subprocess.run([GCLOUD, *argv[1:]], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=120)
    return result.returncode, result.stderr


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """Every line the deploy script's dry runs print, plus the build configs and controls, run in parallel."""
    tmp = tmp_path_factory.mktemp("gcloud")
    key = tmp / "api-key.txt"
    key.write_text("0123456789abcdef")
    lines: list[str] = []
    for name, args in scenario_args(key).items():
        lines += dry_run_lines(tmp, *args, extra_env=SCENARIO_ENV.get(name))
    for config in ("cloudbuild_slim.yaml", "cloudbuild_clip.yaml"):
        lines.append(f"gcloud builds submit --config={config} --no-source --project={PROJECT} --quiet")
    broken = tmp / "cloudbuild_broken.yaml"
    broken.write_text((REPO / "cloudbuild_slim.yaml").read_text().replace(BAD_BUILD_CONFIG,
                                                                          "machineType: E2_HUGE"))
    lines.append(f"gcloud builds submit --config={broken} --no-source --project={PROJECT} --quiet")
    lines += [MISSPELLED, BAD_VALUE]
    unique = list(dict.fromkeys(lines))
    with ThreadPoolExecutor(max_workers=max(4, (os.cpu_count() or 2) * 2)) as pool:
        return dict(zip(unique, pool.map(run_gcloud, unique)))


def test_controls_show_gcloud_tells_parse_errors_from_auth_errors(results):
    for line in (MISSPELLED, BAD_VALUE):
        code, stderr = results[line]
        assert code == 2, f"expected a parse error (2), got {code}: {stderr}"
        assert AUTH_ERROR not in stderr
    broken = next(line for line in results if "cloudbuild_broken.yaml" in line)
    code, stderr = results[broken]
    assert AUTH_ERROR not in stderr and "machineType" in stderr, stderr


def test_every_printed_command_fails_only_at_authentication(results):
    printed = [line for line in results if line not in (MISSPELLED, BAD_VALUE)
               and "--no-source" not in line]
    assert len(printed) >= 20  # every scenario contributed
    assert any(line.startswith("gcloud run deploy ") for line in printed)
    failures = [f"exit {code}: {line}\n  {stderr.strip().splitlines()[0] if stderr.strip() else ''}"
                for line, (code, stderr) in results.items() if line in printed
                and (code != 1 or AUTH_ERROR not in stderr)]
    assert not failures, "gcloud rejected these before authentication:\n" + "\n".join(failures)


@pytest.mark.parametrize("config", ["cloudbuild_slim.yaml", "cloudbuild_clip.yaml"])
def test_build_config_is_accepted_up_to_authentication(results, config):
    line = f"gcloud builds submit --config={config} --no-source --project={PROJECT} --quiet"
    code, stderr = results[line]
    assert code == 1 and AUTH_ERROR in stderr, stderr
