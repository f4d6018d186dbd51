"""deploy-cloudrun.sh: liveness probe, secrets, VPC egress, batch jobs, event triggers, alert policies, IAM."""

from __future__ import annotations

import shlex

import pytest

from tests.shipping.helpers import (
    EVENTS_ENV,
    PROJECT,
    REDIS_ENV,
    REGION,
    TARGET,
    dry_run_lines,
    flag_values,
    run_deploy,
)
from tests.shipping.test_deploy_script import (
    annotations,
    container,
    deploys,
    env_vars,
    run_with_fake_gcloud,
    secret_refs,
    specs,
)

pytestmark = pytest.mark.unit
PASSWORD = "hunter2-Sup3rSecret"
REDIS_URI = f"redis://:{PASSWORD}@10.0.0.3:6379/0"


def argvs(lines):
    return [shlex.split(line) for line in lines]


def commands(lines, *words):
    """argv of the printed lines that start with gcloud WORDS..."""
    return [a for a in argvs(lines) if a[1:1 + len(words)] == list(words)]


def bindings(lines):
    """(resource, member, role) of every add-iam-policy-binding line."""
    found = []
    for argv in argvs(lines):
        if "add-iam-policy-binding" in argv:
            index = argv.index("add-iam-policy-binding")
            resource = " ".join(argv[1:index] + [argv[index + 1]])
            found.append((resource, flag_values(argv, "--member")[0], flag_values(argv, "--role")[0]))
    return found


@pytest.fixture
def redis_file(tmp_path):
    path = tmp_path / "redis-uri.txt"
    path.write_text(REDIS_URI)
    return path


# ---- services: probes, secrets, VPC ----------------------------------------------------------

@pytest.mark.parametrize("service", ["clip-server", "whisper-worker"])
def test_services_get_a_liveness_probe_on_livez_beside_the_startup_probe(tmp_path, service):
    spec = deploys(dry_run_lines(tmp_path, *TARGET, "deploy", "--skip-build", "--image-tag", "v1"))[service]
    startup, probe = container(spec)["startupProbe"], container(spec)["livenessProbe"]
    assert probe["httpGet"]["path"] == "/livez" and startup["httpGet"]["path"] == "/health"
    assert probe["httpGet"]["port"] == container(spec)["ports"][0]["containerPort"]
    assert probe["timeoutSeconds"] <= probe["periodSeconds"]
    # Replaced after about a minute of silence, not on one slow answer.
    assert 30 <= probe["periodSeconds"] * probe["failureThreshold"] <= 120


def test_liveness_probe_can_be_switched_off_and_is_validated(tmp_path):
    off = tmp_path / "off.env"
    off.write_text("LIVENESS_PROBE_PATH=\n")
    spec = deploys(dry_run_lines(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1",
                                 env_file=str(off)))["clip-server"]
    assert "livenessProbe" not in container(spec)
    bad = tmp_path / "bad.env"
    bad.write_text("LIVENESS_PROBE_TIMEOUT_S=20\nLIVENESS_PROBE_PERIOD_S=10\n")
    result = run_deploy(tmp_path, "--dry-run", *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1",
                        env_file=str(bad))
    assert result.returncode != 0 and "liveness" in result.stderr


def test_startup_probe_initial_delay_adds_to_the_budget_each_part_at_most_240_s(tmp_path):
    spec = deploys(dry_run_lines(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1"))
    probe = container(spec["clip-server"])["startupProbe"]
    assert probe["initialDelaySeconds"] == 60 and probe["periodSeconds"] * probe["failureThreshold"] == 240
    late = tmp_path / "late.env"
    late.write_text("STARTUP_PROBE_INITIAL_DELAY_S=300\n")
    result = run_deploy(tmp_path, "--dry-run", *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1",
                        env_file=str(late))
    assert result.returncode != 0 and "initialDelaySeconds" in result.stderr


def test_redis_uri_comes_from_secret_manager_with_vpc_egress_and_its_password_is_never_printed(
        tmp_path, redis_file):
    result = run_deploy(tmp_path, "--dry-run", *TARGET, "deploy", "worker", "--skip-build", "--image-tag", "v1",
                        "--redis-uri-file", str(redis_file), extra_env=REDIS_ENV)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert "redis://:***@10.0.0.3:6379/0" in result.stderr  # what was stored, masked
    lines = result.stdout.splitlines()
    assert (f"gcloud secrets versions add gpu-inference-redis-uri --data-file={redis_file} "
            f"--project={PROJECT} --quiet") in lines
    spec = deploys(lines)["whisper-worker"]
    assert secret_refs(spec) == {
        "API_KEY": "gpu-inference-api-key:VERSION",
        "RATE_LIMIT_STORAGE_URI": "gpu-inference-redis-uri:VERSION",
        "JOB_STORE_URI": "gpu-inference-redis-uri:VERSION",  # job records shared too, unless JOB_STORE_BUCKET
        "CALLBACK_SECRET": "gpu-inference-callback:VERSION"}
    assert PASSWORD not in str(spec) and "RATE_LIMIT_STORAGE_URI" not in env_vars(spec)
    # Direct VPC egress, private ranges only: Memorystore's 10.x address becomes reachable.
    interfaces = annotations(spec)["run.googleapis.com/network-interfaces"]
    assert interfaces == '[{"network":"default","subnetwork":"default"}]'
    assert annotations(spec)["run.googleapis.com/vpc-access-egress"] == "private-ranges-only"
    # The runtime identity may read each secret it is given, and only those.
    granted = {(r, role) for r, _, role in bindings(lines)}
    for secret in ("gpu-inference-api-key", "gpu-inference-redis-uri", "gpu-inference-callback"):
        assert (f"secrets {secret}", "roles/secretmanager.secretAccessor") in granted


def test_a_connector_replaces_direct_vpc_egress(tmp_path):
    lines = dry_run_lines(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1",
                          extra_env={**REDIS_ENV, "VPC_CONNECTOR": "redis-connector", "VPC_EGRESS": "all-traffic"})
    found = annotations(deploys(lines)["clip-server"])
    assert found["run.googleapis.com/vpc-access-connector"] == "redis-connector"
    assert found["run.googleapis.com/vpc-access-egress"] == "all-traffic"
    assert "run.googleapis.com/network-interfaces" not in found
    result = run_deploy(tmp_path, "--dry-run", *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1",
                        extra_env={**REDIS_ENV, "VPC_EGRESS": "everything"})
    assert result.returncode != 0 and "VPC_EGRESS" in result.stderr


def test_no_redis_means_no_vpc_annotations(tmp_path):
    lines = dry_run_lines(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1")
    assert not [a for a in annotations(deploys(lines)["clip-server"]) if "vpc" in a or "network" in a]


@pytest.mark.parametrize("where", ["env", "extra"])
def test_a_plain_redis_uri_is_refused_without_echoing_the_password(tmp_path, where):
    env = {"RATE_LIMIT_STORAGE_URI": REDIS_URI} if where == "env" else \
        {"EXTRA_ENV_VARS": f"RATE_LIMIT_STORAGE_URI={REDIS_URI}"}
    result = run_deploy(tmp_path, "--dry-run", *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1",
                        extra_env=env)
    assert result.returncode != 0 and "REDIS_URI_SECRET" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_a_redis_file_with_a_newline_or_another_scheme_is_refused(tmp_path):
    newline = tmp_path / "nl.txt"
    newline.write_text(REDIS_URI + "\n")
    result = run_deploy(tmp_path, "--dry-run", *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1",
                        "--redis-uri-file", str(newline), extra_env=REDIS_ENV)
    assert result.returncode != 0 and "newline" in result.stderr
    http = tmp_path / "http.txt"
    http.write_text(f"http://user:{PASSWORD}@10.0.0.3")
    result = run_deploy(tmp_path, "--dry-run", *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1",
                        "--redis-uri-file", str(http), extra_env=REDIS_ENV)
    assert result.returncode != 0 and "redis://" in result.stderr and PASSWORD not in result.stderr


def test_real_run_with_redis_prints_no_password(tmp_path, redis_file):
    # Installs the recording fake gcloud; without REDIS_URI_SECRET the file is refused, loudly.
    result, _ = run_with_fake_gcloud(tmp_path, *TARGET, "deploy", "worker", "--skip-build", "--image-tag",
                                     "v1", "--redis-uri-file", str(redis_file))
    assert result.returncode != 0 and "REDIS_URI_SECRET" in result.stderr
    log = tmp_path / "gcloud.log"
    log.write_text("")
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "GCLOUD_LOG": str(log), "DESCRIBE_RC": "0",
           "REDIS_URI_SECRET": "gpu-inference-redis-uri"}
    result = run_deploy(tmp_path, *TARGET, "deploy", "worker", "--skip-build", "--image-tag", "v1",
                        "--redis-uri-file", str(redis_file), extra_env=env)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    calls = log.read_text()
    assert "secrets versions add gpu-inference-redis-uri" in calls
    assert PASSWORD not in calls  # gcloud got the file's path, never the URI


def test_client_hints_name_the_variables_the_clients_read(tmp_path):
    result, _ = run_with_fake_gcloud(tmp_path, *TARGET, "deploy", "clip", "--skip-build", "--image-tag", "v1")
    assert result.returncode == 0, result.stderr
    assert "vercel env add CLIP_SERVER_URL production" in result.stderr
    assert "vercel env add CLIP_SERVER_API_KEY production" in result.stderr
    assert "CLIP_API_KEY" not in result.stderr


# ---- batch jobs ------------------------------------------------------------------------------

def job_spec(lines) -> dict:
    (spec,) = specs(lines, ("run", "jobs", "replace")).values()
    return spec


def test_cpu_job_uses_ga_gcloud_without_a_gpu(tmp_path):
    lines = dry_run_lines(tmp_path, *TARGET, "job", "clip", "deploy", "--image-tag", "t1", extra_env=EVENTS_ENV)
    (replace,) = [a for a in argvs(lines) if a[1:4] == ["run", "jobs", "replace"]]
    spec = job_spec(lines)
    assert spec["metadata"]["name"] == "clip-embed-job"
    task = spec["spec"]["template"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in task and "nvidia.com/gpu" not in container(spec)["resources"]["limits"]
    assert container(spec)["command"] == ["python"] and container(spec)["args"] == ["-m", "server.job"]
    assert container(spec)["image"].endswith("/clip-server:t1")  # the service's own image
    env = env_vars(spec)
    assert env["JOB_INPUT"] == "gs://in-bucket/images/" and env["JOB_OUTPUT"] == "gs://out-bucket/embeddings/"
    assert env["HF_HUB_OFFLINE"] == "1" and env["MODELS_DIR"] == "/models"
    # Built first (the image also serves), deployed after.
    build = next(n for n, line in enumerate(lines) if " builds submit " in line)
    assert build < lines.index(shlex.join(replace))


def test_gpu_job_uses_beta_with_one_l4_the_task_settings_and_states_its_zonal_redundancy(tmp_path):
    lines = dry_run_lines(tmp_path, *TARGET, "job", "worker", "deploy", "--skip-build", "--image-tag", "t1",
                          "--tasks", "6", "--parallelism", "3", extra_env=EVENTS_ENV)
    (replace,) = [a for a in argvs(lines) if "replace" in a]
    assert replace[:5] == ["gcloud", "beta", "run", "jobs", "replace"]
    spec = job_spec(lines)
    assert spec["metadata"]["name"] == "whisper-transcribe-job"
    execution = spec["spec"]["template"]["spec"]
    task = execution["template"]["spec"]
    assert task["nodeSelector"] == {"run.googleapis.com/accelerator": "nvidia-l4"}
    limits = container(spec)["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1" and int(limits["cpu"]) >= 4 and int(limits["memory"][:-2]) >= 16
    assert execution["taskCount"] == 6 and execution["parallelism"] == 3
    assert task["maxRetries"] >= 1 and task["timeoutSeconds"] > 0
    assert container(spec)["args"] == ["-m", "worker.job"]
    # Google: GPU jobs run without zonal redundancy; the spec says so.
    assert annotations(spec)["run.googleapis.com/gpu-zonal-redundancy-disabled"] == "true"
    assert env_vars(spec)["WHISPER_DEVICE"] == "cuda"  # no silent fall-back to the CPU
    assert not any(" builds submit " in line for line in lines)
    assert task["serviceAccountName"] == f"gpu-inference-job@{PROJECT}.iam.gserviceaccount.com"


def test_job_identity_reaches_only_its_own_buckets(tmp_path):
    lines = dry_run_lines(tmp_path, *TARGET, "job", "worker", "deploy", "--skip-build", "--image-tag", "t1",
                          extra_env=EVENTS_ENV)
    job_sa = f"serviceAccount:gpu-inference-job@{PROJECT}.iam.gserviceaccount.com"
    assert sorted(bindings(lines)) == [
        ("storage buckets gs://audio-uploads", job_sa, "roles/storage.objectViewer"),
        ("storage buckets gs://inference-results", job_sa, "roles/storage.objectUser")]
    assert not commands(lines, "projects", "add-iam-policy-binding")


def test_jobs_join_the_vpc_only_when_a_network_is_named(tmp_path):
    args = (*TARGET, "job", "worker", "deploy", "--skip-build", "--image-tag", "t1")
    spec = job_spec(dry_run_lines(tmp_path, *args, extra_env={**EVENTS_ENV, **REDIS_ENV}))
    assert "run.googleapis.com/network-interfaces" not in annotations(spec) and not secret_refs(spec)  # no Redis
    spec = job_spec(dry_run_lines(tmp_path, *args, extra_env={"VPC_NETWORK": "inference", "VPC_SUBNET": "jobs"}))
    assert annotations(spec)["run.googleapis.com/network-interfaces"] == '[{"network":"inference","subnetwork":"jobs"}]'


def test_models_from_mounts_the_weights_read_only_and_builds_without_baking(tmp_path):
    lines = dry_run_lines(tmp_path, *TARGET, "deploy", "clip", "--image-tag", "t1",
                          extra_env={"MODELS_FROM": "gs://my-weights/clip/vit-b-32"})
    spec = deploys(lines)["clip-server"]
    (volume,) = spec["spec"]["template"]["spec"]["volumes"]
    assert volume["csi"] == {"driver": "gcsfuse.run.googleapis.com", "readOnly": True,
                             "volumeAttributes": {"bucketName": "my-weights", "mountOptions": "only-dir=clip/vit-b-32"}}
    assert container(spec)["volumeMounts"] == [{"name": volume["name"], "mountPath": "/models", "readOnly": True}]
    (build,) = [a for a in argvs(lines) if a[1:3] == ["builds", "submit"]]
    assert "_BAKE=0" in flag_values(build, "--substitutions")[0].split(",")
    run_sa = f"serviceAccount:gpu-inference-run@{PROJECT}.iam.gserviceaccount.com"
    assert ("storage buckets gs://my-weights", run_sa, "roles/storage.objectViewer") in bindings(lines)


def test_job_execute_status_logs(tmp_path):
    (execute,) = argvs(dry_run_lines(tmp_path, *TARGET, "job", "clip", "execute", "--input", "gs://a/in/",
                                     "--output", "gs://b/out/", "--tasks", "4", "--wait"))
    assert execute[:5] == ["gcloud", "run", "jobs", "execute", "clip-embed-job"]
    assert flag_values(execute, "--update-env-vars") == ["JOB_INPUT=gs://a/in/,JOB_OUTPUT=gs://b/out/"]
    assert "--wait" in execute and flag_values(execute, "--tasks") == ["4"]
    (gpu_execute,) = argvs(dry_run_lines(tmp_path, *TARGET, "job", "worker", "execute"))
    assert gpu_execute[:4] == ["gcloud", "beta", "run", "jobs"] and "--wait" not in gpu_execute
    status = argvs(dry_run_lines(tmp_path, *TARGET, "job", "worker", "status"))
    assert [a[2:5] for a in status] == [["run", "jobs", "describe"], ["run", "jobs", "executions"]]
    (logs,) = argvs(dry_run_lines(tmp_path, *TARGET, "job", "worker", "logs"))
    assert logs[1:3] == ["logging", "read"] and 'resource.labels.job_name="whisper-transcribe-job"' in logs[3]


def test_job_refuses_bad_input(tmp_path):
    for args in (["job", "clip"], ["job", "clip", "launch"], ["job", "nope", "deploy"],
                 ["job", "worker", "deploy", "--skip-build", "--image-tag", "t", "--tasks", "2",
                  "--parallelism", "5"]):
        assert run_deploy(tmp_path, "--dry-run", *TARGET, *args).returncode != 0, args


# ---- triggers --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trigger_lines(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("triggers")
    # Eventarc cannot send the API key, so this deployment is IAM-only (no key).
    return dry_run_lines(tmp, *TARGET, "triggers", "worker", "pubsub", "eventarc", "tasks",
                         extra_env={**EVENTS_ENV, "API_KEY_SECRET": ""})


def test_pubsub_push_subscription_is_oidc_authenticated_with_a_dead_letter_topic(trigger_lines):
    (sub,) = [a for a in commands(trigger_lines, "pubsub", "subscriptions", "create") if "--push-endpoint" in
              " ".join(a)]
    assert sub[4] == "whisper-worker-events-push"
    assert flag_values(sub, "--topic") == ["whisper-worker-events"]
    assert flag_values(sub, "--push-endpoint") == ["https://SERVICE-URL/events/pubsub"]
    invoker = f"gpu-inference-invoker@{PROJECT}.iam.gserviceaccount.com"
    assert flag_values(sub, "--push-auth-service-account") == [invoker]
    assert flag_values(sub, "--dead-letter-topic") == ["whisper-worker-events-dead-letter"]
    assert 5 <= int(flag_values(sub, "--max-delivery-attempts")[0]) <= 100
    assert int(flag_values(sub, "--ack-deadline")[0]) == 600
    topics = {a[4] for a in commands(trigger_lines, "pubsub", "topics", "create")}
    assert topics == {"whisper-worker-events", "whisper-worker-events-dead-letter"}
    # Dead letters are kept by a subscription of their own.
    dead_sub = [a for a in commands(trigger_lines, "pubsub", "subscriptions", "create")
                if flag_values(a, "--topic") == ["whisper-worker-events-dead-letter"]]
    assert dead_sub


def test_storage_notification_eventarc_and_tasks(trigger_lines):
    (notify,) = commands(trigger_lines, "storage", "buckets", "notifications", "create")
    assert notify[5] == "gs://audio-uploads"
    assert flag_values(notify, "--topic") == [f"projects/{PROJECT}/topics/whisper-worker-events"]
    assert flag_values(notify, "--event-types") == ["OBJECT_FINALIZE"]
    assert flag_values(notify, "--object-prefix") == ["incoming/"]
    (trigger,) = commands(trigger_lines, "eventarc", "triggers", "create")
    assert flag_values(trigger, "--destination-run-path") == ["/events/storage"]
    assert flag_values(trigger, "--destination-run-service") == ["whisper-worker"]
    assert set(flag_values(trigger, "--event-filters")) == {
        "type=google.cloud.storage.object.v1.finalized", "bucket=audio-uploads"}
    assert flag_values(trigger, "--location") == [REGION]
    (queue,) = commands(trigger_lines, "tasks", "queues", "create")
    assert float(flag_values(queue, "--max-dispatches-per-second")[0]) > 0
    assert int(flag_values(queue, "--max-concurrent-dispatches")[0]) > 0
    assert flag_values(queue, "--http-oidc-service-account-email-override") == [
        f"gpu-inference-invoker@{PROJECT}.iam.gserviceaccount.com"]


def test_trigger_roles_are_least_privilege(trigger_lines):
    invoker = f"serviceAccount:gpu-inference-invoker@{PROJECT}.iam.gserviceaccount.com"
    runtime = f"serviceAccount:gpu-inference-run@{PROJECT}.iam.gserviceaccount.com"
    granted = bindings(trigger_lines)
    # The invoker may call this one service; it is the only holder of run.invoker.
    assert [(r, m) for r, m, role in granted if role == "roles/run.invoker"] == [
        ("run services whisper-worker", invoker)]
    # The service's identity reads the upload bucket and creates results (create-only writes, so
    # no delete, no overwrite), nothing wider.
    assert {(r, role) for r, m, role in granted if m == runtime} == {
        ("storage buckets gs://audio-uploads", "roles/storage.objectViewer"),
        ("storage buckets gs://inference-results", "roles/storage.objectCreator"),
        ("storage buckets gs://inference-results", "roles/storage.objectViewer")}
    # Project-wide grants only where Eventarc offers nothing narrower.
    project_wide = {(m, role) for r, m, role in granted if r.startswith("projects ")}
    assert project_wide == {(invoker, "roles/eventarc.eventReceiver"),
                            ("serviceAccount:service-PROJECT_NUMBER@gs-project-accounts.iam.gserviceaccount.com",
                             "roles/pubsub.publisher")}
    assert not any(role in {"roles/owner", "roles/editor", "roles/storage.admin", "roles/run.admin"}
                   for _, _, role in granted)


def test_default_triggers_without_a_bucket_skip_storage(tmp_path):
    lines = dry_run_lines(tmp_path, *TARGET, "triggers", "clip")
    assert commands(lines, "pubsub", "subscriptions", "create") and commands(lines, "tasks", "queues", "create")
    assert not commands(lines, "storage", "buckets", "notifications", "create")
    assert not commands(lines, "eventarc", "triggers", "create")
    result = run_deploy(tmp_path, "--dry-run", *TARGET, "triggers", "clip", "eventarc",
                        extra_env={"API_KEY_SECRET": ""})
    assert result.returncode != 0 and "CLIP_EVENTS_BUCKET" in result.stderr and not result.stdout
    assert run_deploy(tmp_path, "--dry-run", *TARGET, "triggers", "clip", "kafka").returncode != 0


# ---- alerts ----------------------------------------------------------------------------------

def test_alerts_create_one_policy_per_file_with_the_channels(tmp_path):
    from tests.shipping.helpers import REPO

    channels = {"ALERT_CHANNELS": "projects/p/notificationChannels/1"}
    lines = dry_run_lines(tmp_path, *TARGET, "alerts", extra_env=channels)
    creates = commands(lines, "alpha", "monitoring", "policies", "create")
    files = sorted(f"alerts/{p.name}" for p in (REPO / "alerts").glob("*.yaml"))
    assert sorted(flag_values(a, "--policy-from-file")[0] for a in creates) == files
    assert all(flag_values(a, "--notification-channels") == ["projects/p/notificationChannels/1"] for a in creates)
    assert len(commands(lines, "alpha", "monitoring", "policies", "list")) == len(files)


FAKE_MONITORING = """#!/bin/bash
printf '%s\\n' "$*" >> "$GCLOUD_LOG"
case "$*" in
  *"policies list"*"5xx ratio"*) echo projects/p/alertPolicies/555 ;;
  *"policies describe projects/p/alertPolicies/555"*) echo projects/p/notificationChannels/7 ;;
esac
exit 0
"""


def test_alerts_update_an_existing_policy_instead_of_duplicating_it(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_MONITORING)
    (bin_dir / "gcloud").chmod(0o755)
    log = tmp_path / "gcloud.log"
    result = run_deploy(tmp_path, *TARGET, "alerts", extra_env={
        "PATH": f"{bin_dir}:/usr/bin:/bin", "GCLOUD_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    updates = [c for c in calls if "policies update" in c]
    # The replacement keeps the channels the policy had (an update replaces the whole policy).
    assert updates == [f"alpha monitoring policies update projects/p/alertPolicies/555 "
                       f"--policy-from-file=alerts/5xx-ratio.yaml "
                       f"--set-notification-channels=projects/p/notificationChannels/7 --project={PROJECT} --quiet"]
    assert not any("create" in c and "5xx-ratio" in c for c in calls)
    assert sum("policies create" in c for c in calls) >= 4


# ---- settings file -----------------------------------------------------------------------------

def test_deploy_env_example_documents_every_setting_with_its_default():
    import re

    from tests.shipping.helpers import REPO

    script = (REPO / "deploy-cloudrun.sh").read_text()
    defaults = dict(re.findall(r'^\s*: "\$\{([A-Z0-9_]+):?=([^}]*)\}"', script, flags=re.M))
    # The per-service settings are the table's, documented as PREFIX_KEY in deploy.env.example.
    assert "services.toml" in (REPO / "deploy.env.example").read_text()
    example = {}
    for line in (REPO / "deploy.env.example").read_text().splitlines():
        match = re.match(r"#?([A-Z0-9_]+)=(\S*)", line)
        if match:
            example[match.group(1)] = match.group(2)
    assert set(defaults) - set(example) == set(), "settings missing from deploy.env.example"
    wrong = {name: (value, example[name]) for name, value in defaults.items()
             if not (REPO / "deploy.env.example").read_text().count(f"#{name}=") and example[name] != value}
    assert not wrong, f"deploy.env.example shows another value than the script's default: {wrong}"


def test_with_an_api_key_pushes_carry_it_and_eventarc_is_refused(tmp_path):
    lines = dry_run_lines(tmp_path, *TARGET, "triggers", "clip")
    (access,) = commands(lines, "secrets", "versions", "access")
    assert access[4:6] == ["latest", "--secret=gpu-inference-api-key"]
    (sub,) = [a for a in commands(lines, "pubsub", "subscriptions", "create") if flag_values(a, "--push-endpoint")]
    assert flag_values(sub, "--push-endpoint") == ["https://SERVICE-URL/events/pubsub?token=API_KEY"]
    (queue,) = commands(lines, "tasks", "queues", "create")
    assert flag_values(queue, "--http-header-override") == ["X-API-Key: API_KEY"]
    result = run_deploy(tmp_path, "--dry-run", *TARGET, "triggers", "clip", "pubsub", "eventarc",
                        extra_env={"CLIP_EVENTS_BUCKET": "photos"})
    assert result.returncode != 0 and "eventarc cannot send the API key" in result.stderr and not result.stdout


FAKE_TRIGGERS = """#!/bin/bash
printf '%s\\n' "$*" >> "$GCLOUD_LOG"
case "$*" in
  *"secrets versions access"*) printf '%s' "$THE_KEY" ;;
  *"format=value(status.url)"*) echo https://clip-server-abc123-uc.a.run.app ;;
  *"format=value(projectNumber)"*) echo 123456789012 ;;
  *" describe "*) exit 1 ;;
esac
exit 0
"""


def test_real_triggers_pass_the_key_to_gcloud_but_never_print_it(tmp_path):
    key = "f00dfeedc0ffee0123456789abcdef42"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_TRIGGERS)
    (bin_dir / "gcloud").chmod(0o755)
    log = tmp_path / "gcloud.log"
    result = run_deploy(tmp_path, *TARGET, "triggers", "clip", extra_env={
        "PATH": f"{bin_dir}:/usr/bin:/bin", "GCLOUD_LOG": str(log), "THE_KEY": key})
    assert result.returncode == 0, result.stderr
    assert key not in result.stdout + result.stderr
    assert "token=***" in result.stderr and "X-API-Key: ***" in result.stderr
    calls = log.read_text()
    assert f"--push-endpoint=https://clip-server-abc123-uc.a.run.app/events/pubsub?token={key}" in calls
    assert "service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com" in calls
