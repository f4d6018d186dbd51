"""deploy-cloudrun.sh: its dry run (what it prints, that it runs nothing), the specs it applies, real runs
against a fake gcloud, cost."""

from __future__ import annotations

import json
import re
import shlex
import stat

import pytest
import yaml

from scripts.services import load as load_table
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


def specs(lines, command=("run", "services", "replace")) -> dict[str, dict]:
    """The specs the printed `gcloud [beta] run services|jobs replace FILE` lines apply, by metadata.name."""
    found = {}
    for argv in (shlex.split(line) for line in lines):
        words = [a for a in argv[1:] if a != "beta"]
        if tuple(words[:3]) == command:
            spec = yaml.safe_load(open(words[3]).read())
            found[spec["metadata"]["name"]] = spec
    return found


def deploys(lines) -> dict[str, dict]:
    """The Service specs a deploy applies, by Cloud Run service name."""
    return specs(lines)


def container(spec) -> dict:
    """The one container of a Service or Job spec."""
    template = spec["spec"]["template"]["spec"]
    template = template.get("template", {}).get("spec", template)  # a Job nests its task template
    (only,) = template["containers"]
    return only


def env_vars(spec) -> dict[str, str]:
    """The plain variables of the spec's container."""
    return {e["name"]: e["value"] for e in container(spec)["env"] if "value" in e}


def secret_refs(spec) -> dict[str, str]:
    """ENV -> SECRET:VERSION of the spec's secret variables."""
    return {e["name"]: f'{e["valueFrom"]["secretKeyRef"]["name"]}:{e["valueFrom"]["secretKeyRef"]["key"]}'
            for e in container(spec)["env"] if "valueFrom" in e}


def annotations(spec) -> dict[str, str]:
    """The revision (or execution) template's annotations."""
    return spec["spec"]["template"].get("metadata", {}).get("annotations", {})


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


def test_full_deploy_sets_up_the_project_then_builds_and_deploys_every_service(tmp_path, api_key_file):
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
    assert {flag_values(b, "--config")[0] for b in builds} == {"cloudbuild.yaml"}
    table = load_table()
    for build in builds:
        subs = dict(pair.split("=", 1) for pair in flag_values(build, "--substitutions")[0].split(","))
        assert subs["_REGION"] == REGION and subs["_TAG"] and subs["_REPO"]
        # The table's row: its Dockerfile and app, built as the dedicated build identity.
        (row,) = [s for s in table.values() if s["image"] == subs["_IMAGE"]]
        assert (subs["_DOCKERFILE"], subs["_APP"], subs["_LOCK"]) == (row["dockerfile"], row["package"], row["lock"])
        assert flag_values(build, "--service-account") == [
            f"projects/{PROJECT}/serviceAccounts/gpu-inference-build@{PROJECT}.iam.gserviceaccount.com"]
    assert len(builds) == len(table)
    # Every service of the table is applied as a spec (services replace), nothing by `run deploy`.
    assert set(deploys(lines)) == {s["cloudrun"]["service"] for s in table.values()}
    assert not any(" run deploy " in line for line in lines)
    # Build before deploy.
    first_build = min(n for n, line in enumerate(lines) if " builds submit " in line)
    first_deploy = min(n for n, line in enumerate(lines) if " services replace " in line)
    assert first_build < first_deploy


def test_the_build_identity_may_push_and_log_and_nothing_more(tmp_path, api_key_file):
    lines = dry_run_lines(tmp_path, PROJECT, REGION, "--api-key-file", str(api_key_file))
    member = f"serviceAccount:gpu-inference-build@{PROJECT}.iam.gserviceaccount.com"
    granted = [(shlex.split(line)[1:4], flag_values(shlex.split(line), "--role")[0]) for line in lines
               if "add-iam-policy-binding" in line and member in line]
    assert sorted(role for _, role in granted) == ["roles/artifactregistry.writer", "roles/logging.logWriter",
                                                   "roles/storage.objectViewer"]
    assert (["artifacts", "repositories", "add-iam-policy-binding"], "roles/artifactregistry.writer") in granted


@pytest.mark.parametrize("service", ["clip-server", "whisper-worker"])
def test_the_spec_fits_a_gpu_service(tmp_path, api_key_file, service):
    lines = dry_run_lines(tmp_path, PROJECT, REGION, "--api-key-file", str(api_key_file))
    spec = deploys(lines)[service]
    revision = spec["spec"]["template"]["spec"]
    assert revision["nodeSelector"] == {"run.googleapis.com/accelerator": "nvidia-l4"}
    limits = container(spec)["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1" and int(limits["cpu"]) >= 4
    assert limits["memory"].endswith("Gi") and int(limits["memory"][:-2]) >= 16
    assert annotations(spec)["run.googleapis.com/cpu-throttling"] == "false"  # CPU always allocated
    assert annotations(spec)["run.googleapis.com/gpu-zonal-redundancy-disabled"] == "true"
    env = env_vars(spec)
    # Room for batches to fill: at least a batch's worth of requests per instance.
    assert revision["containerConcurrency"] >= int(env["MAX_BATCH_SIZE"]) > 1
    assert env["HF_HUB_OFFLINE"] == "1" and env["MODELS_DIR"] == "/models"
    assert "API_KEY" not in env and "PORT" not in env
    # Pinned at deploy, never :latest (a dry run shows the placeholder of the lookup it prints).
    assert secret_refs(spec) == {"API_KEY": "gpu-inference-api-key:VERSION"}
    assert any(" secrets versions list gpu-inference-api-key " in line for line in lines)
    assert revision["serviceAccountName"].endswith(f"@{PROJECT}.iam.gserviceaccount.com")
    assert "maxScale" in " ".join(annotations(spec)) and revision["timeoutSeconds"] > 0
    port = container(spec)["ports"][0]["containerPort"]
    probe = container(spec)["startupProbe"]
    assert probe["httpGet"] == {"path": "/health", "port": port}
    assert probe["periodSeconds"] * probe["failureThreshold"] <= 240 and probe["initialDelaySeconds"] <= 240
    assert probe["timeoutSeconds"] <= probe["periodSeconds"]
    assert container(spec)["image"].startswith(f"{REGION}-docker.pkg.dev/{PROJECT}/gpu-inference/")
    # A normal deploy sends all traffic to the new revision; the public invoker binding is IAM.
    assert spec["spec"]["traffic"] == [{"latestRevision": True, "percent": 100}]
    assert any(line.startswith(f"gcloud run services add-iam-policy-binding {service} --member=allUsers")
               for line in lines)


def test_zonal_redundancy_is_explicit_either_way(tmp_path):
    on = dry_run_lines(tmp_path, *TARGET, "deploy", "worker", "--zonal-redundancy",
                       "--skip-build", "--image-tag", "v1")
    spec = deploys(on)["whisper-worker"]
    assert annotations(spec)["run.googleapis.com/gpu-zonal-redundancy-disabled"] == "false"
    assert container(spec)["image"].endswith("/whisper-worker:v1")
    assert not any(" builds submit " in line for line in on)


def test_staged_rollout_keeps_the_live_split_and_adds_the_tagged_revision_at_zero(tmp_path):
    staged = dry_run_lines(tmp_path, *TARGET, "deploy", "clip", "--no-traffic", "--tag", "canary")
    assert any("gcloud run services describe clip-server --format=json" in line for line in staged)
    spec = deploys(staged)["clip-server"]
    # The dry run's stand-in for the live service: one revision at 100%.
    assert spec["spec"]["traffic"] == [{"revisionName": "clip-server-00001-cur", "percent": 100},
                                       {"latestRevision": True, "percent": 0, "tag": "canary"}]
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
    assert [shlex.split(d)[4] for d in deletes] == [s["cloudrun"]["service"] for s in load_table().values()]


def test_settings_come_from_the_env_file_and_flags_override_it(tmp_path):
    env_file = tmp_path / "deploy.env"
    env_file.write_text("PROJECT=from-file\nREGION=europe-west4\nWORKER_WEB_THREADS=24\n"
                        "GPU_ZONAL_REDUNDANCY=true\nRATE_LIMIT='120/minute;2000/hour'\nAPI_KEY_SECRET=\n")
    lines = dry_run_lines(tmp_path, "deploy", "worker", "--no-zonal-redundancy", "--skip-build",
                          "--image-tag", "v2", env_file=str(env_file))
    (replace,) = [shlex.split(line) for line in lines if " services replace " in line]
    assert flag_values(replace, "--project") == ["from-file"]
    assert flag_values(replace, "--region") == ["europe-west4"]
    spec = deploys(lines)["whisper-worker"]
    assert env_vars(spec)["WEB_THREADS"] == "24"
    assert env_vars(spec)["RATE_LIMIT"] == "120/minute;2000/hour"
    assert annotations(spec)["run.googleapis.com/gpu-zonal-redundancy-disabled"] == "true"  # the flag beat the file
    assert not secret_refs(spec) and not any("secrets" in line.split()[1] for line in lines)


def test_a_setting_removed_from_deploy_env_leaves_the_spec(tmp_path):
    with_limit = tmp_path / "with.env"
    with_limit.write_text("RATE_LIMIT='10/second,100/minute'\n")
    spec = deploys(dry_run_lines(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1",
                                 env_file=str(with_limit)))["clip-server"]
    assert env_vars(spec)["RATE_LIMIT"] == "10/second,100/minute"  # commas need no gcloud delimiter syntax
    spec = deploys(dry_run_lines(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1"))
    assert "RATE_LIMIT" not in env_vars(spec["clip-server"])  # replace: the whole configuration


def test_render_prints_the_specs_deploy_would_apply(tmp_path):
    result = run_deploy(tmp_path, "--dry-run", PROJECT, REGION, "render", "whisper", "--image-tag", "v1")
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [("Service", "whisper-worker"),
                                                                         ("Job", "whisper-transcribe-job")]
    every = [d for d in yaml.safe_load_all(run_deploy(tmp_path, "--dry-run", PROJECT, REGION, "render").stdout) if d]
    assert len(every) == 2 * len(load_table())


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
  *"describe"*"--format=json"*) [ "$DESCRIBE_RC" = 0 ] || exit 1; echo "$LIVE_SERVICE" ;;
  *" describe "*) exit "$DESCRIBE_RC" ;;
  *"versions list"*) echo projects/p/secrets/s/versions/1 ;;
esac
exit 0
"""


LIVE = {"status": {"traffic": [{"revisionName": "clip-server-00007-abc", "percent": 90, "tag": "blue",
                                 "latestRevision": False, "url": "https://blue---clip-server-abc123-uc.a.run.app"},
                                {"revisionName": "clip-server-00008-def", "percent": 10, "tag": "canary"},
                                {"revisionName": "clip-server-00005-old", "percent": 0, "tag": "old"}]}}


def run_with_fake_gcloud(tmp_path, *args, describe_rc=0, stdin=""):
    """Run the script for real against a gcloud that records its arguments; (result, calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "gcloud"
    fake.write_text(FAKE_GCLOUD)
    fake.chmod(0o755)
    log = tmp_path / "gcloud.log"
    log.write_text("")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "GCLOUD_LOG": str(log), "DESCRIBE_RC": str(describe_rc),
           "LIVE_SERVICE": json.dumps(LIVE)}
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
    assert any(c.startswith("run services replace ") for c in calls)
    # The newest enabled version the fake Secret Manager lists (.../versions/1) is pinned.
    (spec,) = specs([f"gcloud {c}" for c in calls]).values()
    assert secret_refs(spec) == {"API_KEY": "gpu-inference-api-key:1"}
    assert result.stdout.strip() == "https://clip-server-abc123-uc.a.run.app"
    assert "vercel env add CLIP_SERVER_URL production" in result.stderr


def test_a_staged_first_deploy_of_a_new_service_gives_it_the_traffic(tmp_path):
    # describe fails: the service does not exist yet, so there is no split to keep.
    result, calls = run_with_fake_gcloud(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag",
                                         "v1", "--no-traffic", "--tag", "canary", describe_rc=1)
    assert result.returncode == 0, result.stderr
    (spec,) = specs([f"gcloud {c}" for c in calls]).values()
    assert spec["spec"]["traffic"] == [{"latestRevision": True, "percent": 100, "tag": "canary"}]


def test_a_staged_deploy_keeps_the_live_split_and_moves_its_tag_to_the_new_revision(tmp_path):
    result, calls = run_with_fake_gcloud(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag",
                                         "v2", "--no-traffic", "--tag", "canary")
    assert result.returncode == 0, result.stderr
    (spec,) = specs([f"gcloud {c}" for c in calls]).values()
    assert spec["spec"]["traffic"] == [
        {"revisionName": "clip-server-00007-abc", "percent": 90, "tag": "blue"},
        {"revisionName": "clip-server-00008-def", "percent": 10},  # keeps its 10%, the tag moved
        {"revisionName": "clip-server-00005-old", "percent": 0, "tag": "old"},
        {"latestRevision": True, "percent": 0, "tag": "canary"}]


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
        n for n, line in enumerate(lines) if " services replace " in line)
    plain = deploys(dry_run_lines(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1"))
    assert "JOB_STORE_URI" not in env_vars(plain["clip-server"])  # the services' default: the instance's /tmp


def test_cost_of_a_cpu_service_has_no_gpu(tmp_path):
    (name,) = [n for n, s in load_table().items() if not s["gpu"]][:1] or pytest.skip("no CPU service in the table")
    # 10,000 x 2 s = 20,000 s at the table's CPU and memory; no GPU line, all under the free tier.
    rows = cost_table(tmp_path, name, "--requests", "10000", "--seconds", "2", "--cpu", "4", "--memory", "4Gi")
    assert rows["GPU"] == (0.0, 0.0)
    assert rows["total"] == pytest.approx((1.60, 1.60), abs=0.005)  # 80,000 x 0.000018 + 80,000 x 0.000002
    assert rows["total after free tier"] == (0.0, 0.0)
