"""Every spec deploy-cloudrun.sh renders (each service and job of services.toml) loads into gcloud's own
Cloud Run v1 message classes, offline, as `gcloud run services|jobs replace` does before any API call,
and says what the deploy promises: the L4, CPU always allocated, zonal redundancy, probes,
concurrency, pinned secrets."""

from __future__ import annotations

import json
import subprocess
import tempfile

import pytest
import yaml

from core.capacity import L4_MEMORY_BYTES, MIB, instance_concurrency, processes_per_instance
from scripts.services import load
from tests.shipping.helpers import PROJECT, REGION, REPO, run_deploy
from tests.shipping.test_gcloud_offline import GCLOUD, isolated_env, sdk_python

CHECK = REPO / "tests/shipping/gcloud_spec_check.py"
SECRETS = {"API_KEY_SECRET": "gpu-inference-api-key", "REDIS_URI_SECRET": "gpu-inference-redis-uri",
           "CALLBACK_SECRET_NAME": "gpu-inference-callback"}
pytestmark = pytest.mark.skipif(GCLOUD is None or sdk_python() is None, reason="no standard gcloud install")


def rendered(tmp_path, *args: str, **env: str) -> list[dict]:
    """The documents `render` prints (a dry run: the placeholder secret version VERSION)."""
    result = run_deploy(tmp_path, "--dry-run", PROJECT, REGION, "render", *args, "--image-tag", "t1", extra_env=env)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def through_gcloud(documents: list[dict]) -> list[tuple[str, str | None, dict | None]]:
    """(kind, error, message as dict) of each document, parsed by gcloud's message classes."""
    root, python = sdk_python()
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for n, document in enumerate(documents):
            path = f"{folder}/{n}.yaml"
            with open(path, "w") as handle:
                yaml.safe_dump(document, handle)
            files.append(path)
        result = subprocess.run([python, str(CHECK), root, *files], env=isolated_env(folder),
                                capture_output=True, text=True, timeout=120)
    return [(kind, error, message) for _, kind, error, message in json.loads(result.stdout)]


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> list[tuple[str, str | None, dict | None]]:
    tmp = tmp_path_factory.mktemp("specs")
    return through_gcloud(rendered(tmp, **SECRETS))


def test_every_service_and_job_of_the_table_parses_offline(parsed):
    assert [kind for kind, _, _ in parsed] == ["Service", "Job"] * len(load())
    errors = [error for _, error, _ in parsed if error]
    assert not errors, errors


def test_the_check_would_catch_an_unknown_field(tmp_path):
    (service, _job) = rendered(tmp_path, "clip")
    service["spec"]["template"]["spec"]["containerConcurency"] = 8  # misspelled
    ((_, error, _),) = through_gcloud([service])
    assert error and "containerConcurency" in error


def test_gpu_services_get_the_l4_its_minimums_cpu_always_allocated_and_probes(parsed):
    table = {s["cloudrun"]["service"]: s for s in load().values()}
    for kind, _, message in parsed:
        if kind != "Service":
            continue
        row = table[message["metadata"]["name"]]
        revision = message["spec"]["template"]
        spec, annotations = revision["spec"], revision["metadata"]["annotations"]
        (container,) = spec["containers"]
        assert annotations["run.googleapis.com/cpu-throttling"] == "false"
        if row["gpu"]:
            assert spec["nodeSelector"] == {"run.googleapis.com/accelerator": "nvidia-l4"}
            limits = container["resources"]["limits"]
            assert limits["nvidia.com/gpu"] == "1" and float(limits["cpu"]) >= 4
            assert float(limits["memory"].removesuffix("Gi")) >= 16
            # GPU_ZONAL_REDUNDANCY unset: off, the cheaper price
            assert annotations["run.googleapis.com/gpu-zonal-redundancy-disabled"] == "true"
        startup = container["startupProbe"]
        assert startup["httpGet"]["path"] == "/health" and startup["httpGet"]["port"] == row["port"]
        assert startup["periodSeconds"] * startup["failureThreshold"] <= 240 and startup["initialDelaySeconds"] <= 240
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        env = {e["name"]: e.get("value") for e in container["env"]}
        # Concurrency by the one formula (core/capacity.py), for this instance's vCPUs and GPU: every
        # process's batcher can fill (CLIP on an L4: 8 processes x 64 = 512).
        processes = processes_per_instance(int(container["resources"]["limits"]["cpu"]), 1 if row["gpu"] else 0,
                                           row["cloudrun"]["processes_per_gpu"] or None,
                                           L4_MEMORY_BYTES if row["gpu"] else None,
                                           row["cloudrun"].get("weights_mb", 0) * MIB or None,
                                           cpus_per_process=row["cloudrun"].get("cpus_per_process"))
        assert spec["containerConcurrency"] == instance_concurrency(processes, int(env["WEB_THREADS"]),
                                                                    int(env["MAX_BATCH_SIZE"]))
        assert spec["containerConcurrency"] // processes >= int(env["MAX_BATCH_SIZE"])
        assert "WEB_WORKERS" not in env  # gunicorn applies the same rule to the weights the image holds
        if row["gpu"] and row["cloudrun"].get("device"):
            assert env[row["cloudrun"]["device"]] == "cuda"


def test_secrets_are_pinned_versions_never_latest(parsed):
    for kind, _, message in parsed:
        if kind != "Service":
            continue
        (container,) = message["spec"]["template"]["spec"]["containers"]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
        assert set(refs) == {"API_KEY", "RATE_LIMIT_STORAGE_URI", "JOB_STORE_URI", "CALLBACK_SECRET"}
        assert all(ref["key"] == "VERSION" for ref in refs.values())  # the dry run's stand-in for a number


def test_zonal_redundancy_as_configured_and_stated_for_gpu_jobs(tmp_path, parsed):
    (service, _) = rendered(tmp_path, "whisper", GPU_ZONAL_REDUNDANCY="true")
    assert service["spec"]["template"]["metadata"]["annotations"][
        "run.googleapis.com/gpu-zonal-redundancy-disabled"] == "false"
    jobs = {m["metadata"]["name"]: m for kind, _, m in parsed if kind == "Job"}
    for row in load().values():
        job = jobs[row["job"]["name"]]
        task = job["spec"]["template"]["spec"]["template"]["spec"]
        if row["job"]["gpu"]:
            assert task["nodeSelector"] == {"run.googleapis.com/accelerator": "nvidia-l4"}
            # Google: GPU jobs get no zonal redundancy (best-effort failover); the spec says so.
            assert job["spec"]["template"]["metadata"]["annotations"][
                "run.googleapis.com/gpu-zonal-redundancy-disabled"] == "true"
        assert task["containers"][0]["args"] == ["-m", f"{row['package']}.job"]


def test_a_cpu_service_gets_no_gpu_and_no_zonal_setting(monkeypatch):
    from scripts import render_spec

    for name, value in {"PROJECT": PROJECT, "REGION": REGION, "IMAGE_TAG": "t1", "STARTUP_PROBE_PERIOD_S": "10",
                        "STARTUP_PROBE_FAILURE_THRESHOLD": "24", "STARTUP_PROBE_TIMEOUT_S": "5"}.items():
        monkeypatch.setenv(name, value)
    row = {**load()["clip"], "gpu": False, "_name": "cpumodel"}
    row["cloudrun"] = {**row["cloudrun"], "cpu": 2, "memory": "4Gi"}
    spec = render_spec.render_service(row)["spec"]["template"]
    (container,) = spec["spec"]["containers"]
    assert "nodeSelector" not in spec["spec"] and "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "run.googleapis.com/gpu-zonal-redundancy-disabled" not in spec["metadata"]["annotations"]
    assert "CLIP_DEVICE" not in {e["name"] for e in container["env"]}  # no device forced without a GPU
    # The L4 minimums hold for a GPU service only; below them a GPU row is refused.
    with pytest.raises(render_spec.Refused, match="at least 4 CPU"):
        render_spec.render_service({**row, "gpu": True})
