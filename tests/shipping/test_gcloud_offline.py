"""The real gcloud CLI, offline and logged out, parses every command the deploy script would run.

With an empty CLOUDSDK_CONFIG and no credentials, gcloud 528 exits 2 on a command-line it cannot
parse (unknown flag, bad value) and 1 once it gets as far as needing an account. Some validation
(startup-probe keys, a Cloud Build config's fields) also exits 1 but with its own message, so a
command passes only with exit 1 *and* the "no active account" message.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.shipping.helpers import PROJECT, REPO, SCENARIO_ENV, dry_run_lines, scenario_args

BATCH = Path(__file__).with_name("gcloud_batch.py")

GCLOUD = shutil.which("gcloud")
pytestmark = pytest.mark.skipif(GCLOUD is None, reason="gcloud (Google Cloud CLI) is not on PATH")

AUTH_ERROR = "You do not currently have an active account selected"
# Valid except for one misspelled flag / one bad value: gcloud must refuse these while parsing.
MISSPELLED = (f"gcloud run deploy clip-server --image=us-docker.pkg.dev/{PROJECT}/r/i:t "
              f"--project={PROJECT} --region=us-central1 --gpu=1 --gpu-typ=nvidia-l4 --quiet")
BAD_VALUE = (f"gcloud run deploy clip-server --image=us-docker.pkg.dev/{PROJECT}/r/i:t "
             f"--project={PROJECT} --region=us-central1 --concurrency=lots --quiet")
BAD_BUILD_CONFIG = "machineType: E2_HIGHCPU_8"
# Lines the script runs only outside a dry run (an existing alert policy is updated, not duplicated).
REAL_ONLY = [f"gcloud alpha monitoring policies update projects/{PROJECT}/alertPolicies/123 "
             f"--policy-from-file=alerts/5xx-ratio.yaml "
             f"--set-notification-channels=projects/{PROJECT}/notificationChannels/7 --project={PROJECT} --quiet",
             f"gcloud alpha monitoring policies describe projects/{PROJECT}/alertPolicies/123 "
             f"'--format=value(notificationChannels.join(\",\"))' --project={PROJECT}",
             # A rerun of `triggers` updates the push subscription and the queue it finds.
             f"gcloud pubsub subscriptions update clip-server-events-push "
             f"'--push-endpoint=https://clip-server-abc-uc.a.run.app/events/pubsub?token=KEY' "
             f"--push-auth-service-account=gpu-inference-invoker@{PROJECT}.iam.gserviceaccount.com --ack-deadline=600 "
             f"--min-retry-delay=10s --max-retry-delay=600s --dead-letter-topic=clip-server-events-dead-letter "
             f"--max-delivery-attempts=5 --project={PROJECT} --quiet",
             f"gcloud tasks queues update clip-server-tasks --location=us-central1 --max-dispatches-per-second=5 "
             f"--max-concurrent-dispatches=16 --max-attempts=5 --min-backoff=10s --max-backoff=300s "
             f"--http-oidc-service-account-email-override=gpu-inference-invoker@{PROJECT}.iam.gserviceaccount.com "
             f"--http-oidc-token-audience-override=https://clip-server-abc-uc.a.run.app "
             f"'--http-header-override=X-API-Key: KEY' --project={PROJECT} --quiet"]


def isolated_env(config: str) -> dict[str, str]:
    """The caller's environment without any gcloud settings or credentials, and an empty config."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("CLOUDSDK_", "GOOGLE_", "GCLOUD_"))}
    env.update(CLOUDSDK_CONFIG=config, CLOUDSDK_CORE_DISABLE_PROMPTS="1",
               CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK="1")
    return env


def run_gcloud(line: str) -> tuple[int, str]:
    """Run one printed command line through the real gcloud, isolated and without credentials."""
    argv = shlex.split(line)
    assert argv[0] == "gcloud", line
    with tempfile.TemporaryDirectory() as config:
        result = subprocess.run([GCLOUD, *argv[1:]], cwd=REPO, env=isolated_env(config), stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=120)
    return result.returncode, result.stderr


def sdk_python() -> tuple[str, str] | None:
    """(Cloud SDK root, the Python it runs on), or None when this gcloud is not a standard install."""
    root = Path(os.path.realpath(GCLOUD)).parent.parent
    if not (root / "lib" / "gcloud.py").exists():
        return None
    bundled = root / "platform" / "bundledpythonunix" / "bin" / "python3"
    return str(root), os.environ.get("CLOUDSDK_PYTHON") or (str(bundled) if bundled.exists() else sys.executable)


def run_gcloud_batch(lines: list[str]) -> dict[str, tuple[int, str]] | None:
    """All lines through one gcloud CLI in one process (gcloud_batch.py); None if that cannot run."""
    sdk = sdk_python()
    if sdk is None:
        return None
    root, python = sdk
    with tempfile.TemporaryDirectory() as config:
        result = subprocess.run([python, str(BATCH), root], cwd=REPO, env=isolated_env(config),
                                input="\n".join(lines), capture_output=True, text=True, timeout=240)
    try:
        rows = json.loads(result.stdout)
    except ValueError:
        return None
    return {line: (code, stderr) for line, code, stderr in rows} if len(rows) == len(lines) else None


def run_all(lines: list[str]) -> dict[str, tuple[int, str]]:
    """Each line's (exit code, stderr): two batch processes (one per core), else one gcloud per line."""
    halves = [lines[0::2], lines[1::2]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        batches = list(pool.map(run_gcloud_batch, halves))
    if all(batch is not None for batch in batches):
        return {**batches[0], **batches[1]}
    with ThreadPoolExecutor(max_workers=max(4, (os.cpu_count() or 2) * 2)) as pool:
        return dict(zip(lines, pool.map(run_gcloud, lines)))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """Every line the deploy script's dry runs print, plus the build configs and controls, run in parallel."""
    tmp = tmp_path_factory.mktemp("gcloud")
    key = tmp / "api-key.txt"
    key.write_text("0123456789abcdef")
    lines: list[str] = []
    for name, args in scenario_args(key).items():
        lines += dry_run_lines(tmp, *args, extra_env=SCENARIO_ENV.get(name))
    lines.append(f"gcloud builds submit --config=cloudbuild.yaml --no-source --project={PROJECT} --quiet")
    broken = tmp / "cloudbuild_broken.yaml"
    broken.write_text((REPO / "cloudbuild.yaml").read_text().replace(BAD_BUILD_CONFIG,
                                                                          "machineType: E2_HUGE"))
    lines.append(f"gcloud builds submit --config={broken} --no-source --project={PROJECT} --quiet")
    lines += REAL_ONLY + [MISSPELLED, BAD_VALUE]
    return run_all(list(dict.fromkeys(lines)))


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
    # The specs are applied by replace: gcloud reads each file into its message classes first.
    for command in ("gcloud run services replace ", "gcloud run jobs replace ", "gcloud beta run jobs replace ",
                    "gcloud beta run jobs execute ",
                    "gcloud pubsub subscriptions create ", "gcloud storage buckets notifications create ",
                    "gcloud eventarc triggers create ", "gcloud tasks queues create ",
                    "gcloud alpha monitoring policies create ", "gcloud storage buckets add-iam-policy-binding "):
        assert any(line.startswith(command) for line in printed), f"no scenario prints {command}"
    failures = [f"exit {code}: {line}\n  {stderr.strip().splitlines()[0] if stderr.strip() else ''}"
                for line, (code, stderr) in results.items() if line in printed
                and (code != 1 or AUTH_ERROR not in stderr)]
    assert not failures, "gcloud rejected these before authentication:\n" + "\n".join(failures)


@pytest.mark.parametrize("config", ["cloudbuild.yaml"])
def test_build_config_is_accepted_up_to_authentication(results, config):
    line = f"gcloud builds submit --config={config} --no-source --project={PROJECT} --quiet"
    code, stderr = results[line]
    assert code == 1 and AUTH_ERROR in stderr, stderr


def test_batch_runner_agrees_with_the_gcloud_binary(results):
    # The one-process runner must report what the gcloud command itself reports.
    sample = [MISSPELLED, next(line for line in results if line.startswith("gcloud beta run jobs replace "))]
    with ThreadPoolExecutor(max_workers=2) as pool:
        direct = dict(zip(sample, pool.map(run_gcloud, sample)))
    for line, (code, stderr) in direct.items():
        assert code == results[line][0], (line, stderr, results[line])
