"""deploy-cloudrun.sh: its dry run (what it prints, that it runs nothing), real runs against a fake gcloud, cost."""

from __future__ import annotations

import re
import shlex
import stat

import pytest

from tests.shipping.helpers import (
    PROJECT,
    REGION,
    SCENARIO_ENV,
    TARGET,
    dry_run_lines,
    flag_values,
    run_deploy,
    scenario_args,
)


def deploys(lines):
    """argv of each `gcloud run deploy` line, keyed by service name."""
    parsed = [shlex.split(line) for line in lines]
    return {argv[3]: argv for argv in parsed if argv[1:3] == ["run", "deploy"]}


def env_vars(argv) -> dict[str, str]:
    (value,) = flag_values(argv, "--set-env-vars")
    delim = ","
    if value.startswith("^"):
        delim, value = value[1:].split("^", 1)
    return dict(pair.split("=", 1) for pair in value.split(delim))


def test_dry_run_runs_nothing_and_prints_only_gcloud_commands(tmp_path, api_key_file):
    # A gcloud on PATH that leaves a mark if anything calls it.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    marker = tmp_path / "gcloud-was-called"
    fake = fake_bin / "gcloud"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    path = f"{fake_bin}:/usr/bin:/bin"
    for name, args in scenario_args(api_key_file).items():
        result = run_deploy(tmp_path, "--dry-run", *args, extra_env={**SCENARIO_ENV.get(name, {}), "PATH": path})
        assert result.returncode == 0, f"{name}: {result.stderr}"
        lines = result.stdout.splitlines()
        assert lines, name
        for line in lines:
            argv = shlex.split(line)  # every line is valid shell
            assert argv[0] == "gcloud", f"{name}: {line}"
            assert f"--project={PROJECT}" in argv, f"{name}: {line}"
    assert not marker.exists(), "a dry run called gcloud"


def test_full_deploy_sets_up_the_project_then_builds_and_deploys_both(tmp_path, api_key_file):
    lines = dry_run_lines(tmp_path, PROJECT, REGION, "--api-key-file", str(api_key_file))
    text = "\n".join(lines)
    enable = next(shlex.split(line) for line in lines if " services enable " in line)
    assert {"run.googleapis.com", "artifactregistry.googleapis.com", "cloudbuild.googleapis.com",
            "secretmanager.googleapis.com"} <= set(enable)
    # Idempotent creation: a dry run shows the describe and the create.
    for resource in ("artifacts repositories", "secrets", "iam service-accounts"):
        assert f"gcloud {resource} describe" in text and f"gcloud {resource} create" in text
    assert f"gcloud secrets versions add gpu-inference-api-key --data-file={api_key_file}" in text
    builds = [shlex.split(line) for line in lines if " builds submit " in line]
    assert {flag_values(b, "--config")[0] for b in builds} == {"cloudbuild_clip.yaml", "cloudbuild_slim.yaml"}
    for build in builds:
        subs = dict(pair.split("=", 1) for pair in flag_values(build, "--substitutions")[0].split(","))
        assert subs["_REGION"] == REGION and subs["_TAG"] and subs["_REPO"]
    assert set(deploys(lines)) == {"clip-server", "whisper-worker"}
    # Build before deploy, deploy before the "live" traffic switch.
    first_build = min(n for n, line in enumerate(lines) if " builds submit " in line)
    first_deploy = min(n for n, line in enumerate(lines) if " run deploy " in line)
    assert first_build < first_deploy


@pytest.mark.parametrize("service", ["clip-server", "whisper-worker"])
def test_deploy_flags_fit_a_gpu_service(tmp_path, api_key_file, service):
    lines = dry_run_lines(tmp_path, PROJECT, REGION, "--api-key-file", str(api_key_file))
    argv = deploys(lines)[service]
    for flag in ("--no-cpu-throttling", "--no-gpu-zonal-redundancy", "--allow-unauthenticated", "--quiet"):
        assert flag in argv
    assert flag_values(argv, "--gpu") == ["1"] and flag_values(argv, "--gpu-type") == ["nvidia-l4"]
    assert int(flag_values(argv, "--cpu")[0]) >= 4
    memory = flag_values(argv, "--memory")[0]
    assert memory.endswith("Gi") and int(memory[:-2]) >= 16
    env = env_vars(argv)
    # Concurrency matches the gunicorn threads, and leaves room for batches to fill.
    concurrency = int(flag_values(argv, "--concurrency")[0])
    assert concurrency == int(env["WEB_THREADS"]) > 1
    assert concurrency >= int(env["MAX_BATCH_SIZE"])
    assert env["HF_HUB_OFFLINE"] == "1" and env["MODELS_DIR"] == "/models"
    assert "API_KEY" not in env and "PORT" not in env
    assert flag_values(argv, "--set-secrets") == ["API_KEY=gpu-inference-api-key:latest"]
    assert flag_values(argv, "--service-account")[0].endswith(f"@{PROJECT}.iam.gserviceaccount.com")
    assert flag_values(argv, "--max-instances") and flag_values(argv, "--timeout")
    probe = dict(kv.split("=", 1) for kv in flag_values(argv, "--startup-probe")[0].split(","))
    assert probe["httpGet.path"] == "/health"
    assert probe["httpGet.port"] == flag_values(argv, "--port")[0]
    assert int(probe["periodSeconds"]) * int(probe["failureThreshold"]) <= 240
    assert int(probe["timeoutSeconds"]) <= int(probe["periodSeconds"])
    image = flag_values(argv, "--image")[0]
    assert image.startswith(f"{REGION}-docker.pkg.dev/{PROJECT}/gpu-inference/")
    # A normal deploy ends with traffic on the new revision.
    assert any(line.startswith(f"gcloud run services update-traffic {service} --to-latest") for line in lines)


def test_zonal_redundancy_is_explicit_either_way(tmp_path):
    on = dry_run_lines(tmp_path, *TARGET, "deploy", "worker", "--zonal-redundancy",
                       "--skip-build", "--image-tag", "v1")
    argv = deploys(on)["whisper-worker"]
    assert "--gpu-zonal-redundancy" in argv and "--no-gpu-zonal-redundancy" not in argv
    assert flag_values(argv, "--image")[0].endswith("/whisper-worker:v1")
    assert not any(" builds submit " in line for line in on)


def test_staged_rollout_deploys_without_traffic_then_splits_and_promotes(tmp_path):
    staged = dry_run_lines(tmp_path, *TARGET, "deploy", "clip", "--no-traffic", "--tag", "canary")
    argv = deploys(staged)["clip-server"]
    assert "--no-traffic" in argv and flag_values(argv, "--tag") == ["canary"]
    assert not any("--to-latest" in line for line in staged), "a staged deploy must not take traffic"
    assert "whisper-worker" not in deploys(staged)
    (split,) = dry_run_lines(tmp_path, *TARGET, "traffic", "clip", "canary=10")
    assert "--to-tags=canary=10" in shlex.split(split)
    (promote,) = dry_run_lines(tmp_path, *TARGET, "promote", "clip-server")
    assert shlex.split(promote)[:6] == ["gcloud", "run", "services", "update-traffic", "clip-server",
                                        "--to-latest"]


def test_rollback_status_url_delete(tmp_path):
    (rollback,) = dry_run_lines(tmp_path, *TARGET, "rollback", "worker", "whisper-worker-00002-abc")
    assert "--to-revisions=whisper-worker-00002-abc=100" in shlex.split(rollback)
    status = dry_run_lines(tmp_path, *TARGET, "status", "clip")
    assert [shlex.split(s)[1:4] for s in status] == [["run", "services", "describe"],
                                                      ["run", "revisions", "list"]]
    (url,) = dry_run_lines(tmp_path, *TARGET, "url", "worker")
    assert shlex.split(url)[-1] == "--format=value(status.url)"
    deletes = dry_run_lines(tmp_path, *TARGET, "delete", "all", "--yes")
    assert [shlex.split(d)[4] for d in deletes] == ["clip-server", "whisper-worker"]


def test_settings_come_from_the_env_file_and_flags_override_it(tmp_path):
    env_file = tmp_path / "deploy.env"
    env_file.write_text("PROJECT=from-file\nREGION=europe-west4\nWORKER_WEB_THREADS=24\n"
                        "GPU_ZONAL_REDUNDANCY=true\nRATE_LIMIT='120/minute;2000/hour'\nAPI_KEY_SECRET=\n")
    lines = dry_run_lines(tmp_path, "deploy", "worker", "--no-zonal-redundancy", "--skip-build",
                          "--image-tag", "v2", env_file=str(env_file))
    argv = deploys(lines)["whisper-worker"]
    assert flag_values(argv, "--project") == ["from-file"]
    assert flag_values(argv, "--region") == ["europe-west4"]
    assert flag_values(argv, "--concurrency") == ["24"] and env_vars(argv)["WEB_THREADS"] == "24"
    assert env_vars(argv)["RATE_LIMIT"] == "120/minute;2000/hour"
    assert "--no-gpu-zonal-redundancy" in argv  # the flag beat the file
    assert "--clear-secrets" in argv and not any("secrets" in line.split()[1] for line in lines)


def test_values_with_commas_use_gcloud_custom_delimiter(tmp_path):
    env_file = tmp_path / "deploy.env"
    env_file.write_text("RATE_LIMIT='10/second,100/minute'\n")
    lines = dry_run_lines(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1",
                          env_file=str(env_file))
    assert env_vars(deploys(lines)["clip-server"])["RATE_LIMIT"] == "10/second,100/minute"


def test_api_key_file_with_trailing_newline_is_refused(tmp_path):
    key = tmp_path / "key.txt"
    key.write_text("secret\n")
    result = run_deploy(tmp_path, "--dry-run", PROJECT, REGION, "--api-key-file", str(key))
    assert result.returncode != 0 and "newline" in result.stderr


def test_bad_input_is_refused(tmp_path):
    assert run_deploy(tmp_path, "--dry-run", *TARGET, "rollback", "nope", "rev").returncode != 0
    assert run_deploy(tmp_path, "--dry-run", *TARGET, "deploy", "--no-traffic").returncode != 0
    assert run_deploy(tmp_path, "--dry-run", "deploy").returncode != 0  # no project
    assert run_deploy(tmp_path, "--dry-run", *TARGET, "deploy", "--bogus").returncode != 0
    probe = tmp_path / "probe.env"
    probe.write_text("STARTUP_PROBE_PERIOD_S=30\nSTARTUP_PROBE_FAILURE_THRESHOLD=10\n")
    result = run_deploy(tmp_path, "--dry-run", *TARGET, env_file=str(probe))
    assert result.returncode != 0 and "240" in result.stderr


# ---- cost ------------------------------------------------------------------------------------

def cost_table(tmp_path, *args) -> dict[str, tuple[float, float]]:
    result = run_deploy(tmp_path, "cost", *args)
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        match = re.fullmatch(r"(\S.*?)\s+(\d+\.\d\d)\s+(\d+\.\d\d)", line)
        if match:
            rows[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    return rows


def test_cost_matches_hand_computed_numbers(tmp_path):
    # 1,000,000 requests x 1.5 s / 8 at once = 187,500 instance-seconds.
    # CPU    4 vCPU   x 187,500 = 750,000 vCPU-s   x $0.000018  = $13.50; free tier 240,000 -> $9.18
    # Memory 16 GiB   x 187,500 = 3,000,000 GiB-s  x $0.000002  = $6.00;  free tier 450,000 -> $5.10
    # GPU    187,500 s x $0.0001867 = $35.00625;  zonal redundancy x $0.0002909 = $54.54375
    rows = cost_table(tmp_path, "--requests", "1000000", "--seconds", "1.5", "--concurrency", "8",
                      "--cpu", "4", "--memory", "16Gi")
    assert rows["CPU"] == (13.50, 13.50)
    assert rows["memory"] == (6.00, 6.00)
    assert rows["GPU"] == pytest.approx((35.01, 54.54), abs=0.005)
    assert rows["total"] == pytest.approx((54.51, 74.04), abs=0.005)          # 54.50625, 74.04375
    assert rows["total after free tier"] == pytest.approx((49.29, 68.82), abs=0.005)  # 49.28625, 68.82375


def test_cost_of_an_always_warm_instance(tmp_path):
    # min 1 instance all month: 2,628,000 s x (4 x 0.000018 + 16 x 0.000002 + 0.0001867) = $763.96
    rows = cost_table(tmp_path, "worker", "--requests", "1000", "--seconds", "2", "--min-instances", "1")
    assert rows["total"] == pytest.approx((763.96, 1037.80), abs=0.005)
    # free tier: (10,512,000 - 240,000) x 0.000018 + (42,048,000 - 450,000) x 0.000002 + 490.6476
    assert rows["total after free tier"] == pytest.approx((758.74, 1032.58), abs=0.005)


def test_cost_inside_the_free_tier_pays_only_the_gpu(tmp_path):
    # 10,000 x 2 s = 20,000 s: 80,000 vCPU-s and 320,000 GiB-s, both under the free tier.
    rows = cost_table(tmp_path, "--requests", "10000", "--seconds", "2", "--cpu", "4", "--memory", "16Gi")
    assert rows["total after free tier"] == pytest.approx((3.73, 5.82), abs=0.005)  # 3.734, 5.818


def test_cost_refuses_bad_numbers(tmp_path):
    assert run_deploy(tmp_path, "cost", "--requests", "many", "--seconds", "1").returncode != 0
    assert run_deploy(tmp_path, "cost", "--requests", "10", "--seconds", "1",
                      "--concurrency", "0").returncode != 0
    assert run_deploy(tmp_path, "cost", "--requests", "10").returncode != 0


# ---- real mode against a recording fake gcloud ---------------------------------------------

FAKE_GCLOUD = """#!/bin/bash
printf '%s\\n' "$*" >> "$GCLOUD_LOG"
case "$*" in
  *"describe"*"--format=value(status.url)"*) echo https://clip-server-abc123-uc.a.run.app ;;
  *" describe "*) exit "$DESCRIBE_RC" ;;
  *"versions list"*) echo projects/p/secrets/s/versions/1 ;;
esac
exit 0
"""


def run_with_fake_gcloud(tmp_path, *args, describe_rc=0, stdin=""):
    """Run the script for real against a gcloud that records its arguments; (result, calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "gcloud"
    fake.write_text(FAKE_GCLOUD)
    fake.chmod(0o755)
    log = tmp_path / "gcloud.log"
    log.write_text("")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "GCLOUD_LOG": str(log), "DESCRIBE_RC": str(describe_rc)}
    result = run_deploy(tmp_path, *args, extra_env=env, stdin=stdin)
    return result, log.read_text().splitlines()


@pytest.mark.parametrize("exists", [True, False])
def test_real_run_creates_only_what_is_missing_and_prints_the_url(tmp_path, exists):
    result, calls = run_with_fake_gcloud(tmp_path, *TARGET, "deploy", "clip", "--skip-build",
                                         "--image-tag", "v1", describe_rc=0 if exists else 1)
    assert result.returncode == 0, result.stderr
    creates = [c for c in calls if " create " in f" {c} "]
    if exists:
        assert not creates
    else:
        assert {c.split()[0] for c in creates} == {"iam", "secrets"}
    assert any(c.startswith("run deploy clip-server ") for c in calls)
    assert result.stdout.strip() == "https://clip-server-abc123-uc.a.run.app"
    assert "vercel env add CLIP_SERVER_URL production" in result.stderr


def test_real_staged_deploy_points_at_the_tag_url(tmp_path):
    result, _ = run_with_fake_gcloud(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag",
                                     "v1", "--no-traffic", "--tag", "canary")
    assert result.returncode == 0, result.stderr
    assert "https://canary---clip-server-abc123-uc.a.run.app" in result.stderr


def test_delete_asks_first(tmp_path):
    result, calls = run_with_fake_gcloud(tmp_path, *TARGET, "delete", "clip", stdin="n\n")
    assert result.returncode != 0 and not any(" delete " in f" {c} " for c in calls)
    result, calls = run_with_fake_gcloud(tmp_path, *TARGET, "delete", "clip", stdin="y\n")
    assert result.returncode == 0 and calls == [f"run services delete clip-server --project={PROJECT} "
                                                f"--region={REGION} --quiet"]


def test_a_job_store_bucket_gives_each_service_a_shared_job_store_it_may_rewrite(tmp_path):
    env_file = tmp_path / "deploy.env"
    env_file.write_text("JOB_STORE_BUCKET=my-jobs\nAPI_KEY_SECRET=\n")
    lines = dry_run_lines(tmp_path, *TARGET, "deploy", "all", "--skip-build", "--image-tag", "v1",
                          env_file=str(env_file))
    found = deploys(lines)
    assert env_vars(found["clip-server"])["JOB_STORE_URI"] == "gs://my-jobs/jobs/clip-server"
    assert env_vars(found["whisper-worker"])["JOB_STORE_URI"] == "gs://my-jobs/jobs/whisper-worker"
    grants = [shlex.split(line) for line in lines if " buckets add-iam-policy-binding " in line]
    assert [(g[4], flag_values(g, "--role")) for g in grants] == [("gs://my-jobs", ["roles/storage.objectUser"])]
    assert min(n for n, line in enumerate(lines) if "add-iam-policy-binding gs://my-jobs" in line) < min(
        n for n, line in enumerate(lines) if " run deploy " in line)
    plain = deploys(dry_run_lines(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1"))
    assert "JOB_STORE_URI" not in env_vars(plain["clip-server"])  # the services' default: the instance's /tmp
