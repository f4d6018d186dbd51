"""docker-compose.yml: rendered from services.toml, valid Compose, the services, their ports, GPUs and health checks."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from scripts.services import compose as render_compose
from scripts.services import load as load_table
from tests.shipping.helpers import REPO

# The Compose spec schema from shared/ (beside the checkout, or inside it), or COMPOSE_SCHEMA.
SCHEMA_CANDIDATES = [Path(os.environ.get("COMPOSE_SCHEMA", "/nonexistent")),
                     REPO / "shared/schemas/compose-spec.json",
                     REPO.parent / "shared/schemas/compose-spec.json",
                     Path("/work/shared/schemas/compose-spec.json")]
SCHEMA = next((p for p in SCHEMA_CANDIDATES if p.exists()), SCHEMA_CANDIDATES[-1])
CONTRACT_ENV = {"PORT", "MODELS_DIR", "HF_HUB_OFFLINE", "API_KEY", "WEB_THREADS", "MAX_BATCH_SIZE",
                "MAX_WAIT_MS", "RATE_LIMIT", "RATE_LIMIT_STORAGE_URI", "MAX_REQUEST_MB"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


@pytest.mark.skipif(not SCHEMA.exists(), reason=f"Compose schema not found at {SCHEMA}")
def test_compose_file_validates_against_the_compose_spec(compose):
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


@pytest.mark.skipif(not SCHEMA.exists(), reason=f"Compose schema not found at {SCHEMA}")
def test_schema_check_would_catch_a_broken_file(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["ports"] = {"8080": 8080}  # a mapping is not a port list
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    assert list(validator.iter_errors(broken))


def test_services_and_host_ports(compose):
    services = compose["services"]
    assert {"clip-server", "clip-server-cpu", "worker", "worker-slim"} <= set(services)
    assert services["clip-server"]["ports"] == ["5001:5001"]
    assert services["clip-server-cpu"]["ports"] == ["5002:5001"]
    assert services["worker"]["ports"] == ["8080:8080"]
    assert services["worker-slim"]["ports"] == ["8081:8080"]
    host_ports = [port.split(":")[0] for service in services.values() for port in service["ports"]]
    assert len(set(host_ports)) == len(host_ports), "both profiles can run at once"


def test_cpu_profile_runs_both_services_without_a_gpu_and_gpu_profile_both_on_gpus(compose):
    services = compose["services"]
    profiles = {name: service.get("profiles", []) for name, service in services.items()}
    assert all(profiles.values()), f"a service without a profile starts with every profile: {profiles}"
    cpu = {name for name, p in profiles.items() if "cpu" in p}
    gpu = {name for name, p in profiles.items() if "gpu" in p}
    # `docker compose --profile cpu up`: one CLIP and one Whisper service, no GPU reservation.
    assert {services[n]["build"]["dockerfile"] for n in cpu} == {"Dockerfile.cloudrun", "Dockerfile.slim"}
    assert not any(gpu_devices(services[n]) for n in cpu)
    for name in cpu:
        base = services[name]["build"]["args"]["BASE_IMAGE"]
        assert "python:3." in base and "cuda" not in base, name
        assert services[name]["environment"].get("WHISPER_DEVICE", "cpu") == "cpu", name
    assert {services[n]["build"]["dockerfile"] for n in gpu} == {"Dockerfile.cloudrun", "Dockerfile.slim"}
    assert all(gpu_devices(services[n]) for n in gpu)


def test_base_image_defaults_are_the_tags_of_the_pins_file(compose):
    pins = dict(line.split("=", 1) for line in (REPO / "requirements/base-images.lock").read_text().splitlines()
                if line and not line.startswith("#"))
    tags = {name: ref.split("@")[0] for name, ref in pins.items()}
    for name, service in compose["services"].items():
        base = service["build"]["args"]["BASE_IMAGE"]
        variable, default = base[2:-1].split(":-", 1)
        assert default == tags[variable], name  # ${CUDA_BASE_IMAGE:-<its tag>}


def compose_variables() -> set[str]:
    """Every ${VAR} the compose file interpolates."""
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (REPO / "docker-compose.yml").read_text()))


def documented_patterns() -> list[str]:
    """The variable names (or PREFIX/MODEL_VAR patterns) docs/deploy.md's compose table lists."""
    deploy = (REPO / "docs" / "deploy.md").read_text()
    section = deploy.split("### 3. Local runs with docker compose", 1)[1].split("\n### ", 1)[0]
    assert "docker compose --profile cpu up" in section
    table = [line for line in section.splitlines() if line.startswith("| `")]
    return [name for line in table for name in re.findall(r"`([A-Z_][A-Z0-9_]*)`", line.split("|")[1])]


def instances(pattern: str) -> set[str]:
    """The names a documented pattern stands for, for every service of the table."""
    names = set()
    for service in load_table().values():
        for model_var in service["model"]:
            names.add(pattern.replace("PREFIX", service["env_prefix"]).replace("MODEL_VAR", model_var))
    return names


def test_deploy_docs_name_exactly_the_variables_compose_reads():
    documented = set().union(*(instances(p) for p in documented_patterns()))
    used = compose_variables()
    # Every variable compose reads is documented, by name or by pattern (so a new service of the
    # table needs no docs edit); every plain name the docs list is read.
    assert used <= documented, f"compose only: {used - documented}"
    plain = {p for p in documented_patterns() if "PREFIX" not in p and "MODEL_VAR" not in p}
    assert plain <= used, f"docs/deploy.md only: {plain - used}"


def test_committed_compose_file_is_the_render_of_the_table():
    # Edit services.toml, then `make compose`; never docker-compose.yml by hand.
    assert (REPO / "docker-compose.yml").read_text() == render_compose(load_table())


def test_every_service_of_the_table_has_its_cpu_image_and_a_gpu_service_its_gpu_image_too(compose):
    for name, service in load_table().items():
        variants = ["gpu", "cpu"] if service["gpu"] else ["cpu"]
        for variant in variants:
            rendered = compose["services"][service["compose"][variant]]
            assert rendered["build"]["dockerfile"] == service["dockerfile"], name
            assert rendered["build"]["args"]["APP"] == service["package"], name
            assert rendered["environment"]["PORT"] == str(service["port"]), name
            assert bool(gpu_devices(rendered)) == (variant == "gpu"), name


def test_images_come_from_the_repo_dockerfiles(compose):
    services = compose["services"]
    assert services["clip-server"]["build"]["dockerfile"] == "Dockerfile.cloudrun"
    assert services["worker-slim"]["build"]["dockerfile"] == "Dockerfile.slim"
    # worker is the CPU variant of the same Dockerfile.
    assert services["worker"]["build"]["dockerfile"] == "Dockerfile.slim"
    assert "python:3." in services["worker"]["build"]["args"]["BASE_IMAGE"]
    for service in services.values():
        assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).exists()
    tags = [service["image"] for service in services.values()]
    assert len(set(tags)) == len(tags), "two services would overwrite each other's image"


def test_gpu_services_reserve_one_nvidia_gpu_and_cpu_services_none(compose):
    services = compose["services"]
    for name in ("clip-server", "worker-slim"):
        devices = gpu_devices(services[name])
        assert devices, f"{name} has no GPU reservation"
        assert devices[0]["driver"] == "nvidia"
        assert "gpu" in devices[0]["capabilities"]
    assert not gpu_devices(services["worker"]) and not gpu_devices(services["clip-server-cpu"])


def test_health_checks_probe_health_on_the_container_port(compose):
    for name, service in compose["services"].items():
        check = service["healthcheck"]
        command = " ".join(check["test"])
        container_port = service["ports"][0].split(":")[-1]
        assert f"127.0.0.1:{container_port}/health" in command, name
        assert service["environment"]["PORT"] == container_port, name
        assert check.get("start_period"), f"{name}: model loading needs a start period"


def test_environment_passes_the_contract_settings(compose):
    for name, service in compose["services"].items():
        env = service["environment"]
        assert CONTRACT_ENV <= set(env), f"{name} misses {CONTRACT_ENV - set(env)}"
        assert env["API_KEY"] == "${API_KEY:-}", "the key comes from the caller's environment"
        assert env["HF_HUB_OFFLINE"] == "1"
        assert env["MODELS_DIR"] == "/models"


def test_model_cache_is_a_named_volume_and_not_over_the_baked_models(compose):
    assert "model-cache" in compose["volumes"]
    for name, service in compose["services"].items():
        mounts = service["volumes"]
        assert any(m.startswith("model-cache:") for m in mounts), name
        # A volume over /models would keep serving old weights after a rebuild with another model.
        assert not any(m.split(":")[1] == "/models" for m in mounts), name


def cpu_only_table() -> dict:
    """The table plus a CPU service (gpu = false), as a team's CPU model would add it."""
    table = load_table()
    row = json.loads(json.dumps(table["clip"]))
    row.update(gpu=False, image="cpu-model", env_prefix="CPUMODEL", model={"CPU_MODEL_NAME": "small"},
               compose={"cpu": "cpu-model", "cpu_port": 5009})
    return {**table, "cpumodel": row}


def test_a_cpu_service_gets_its_cpu_image_alone_and_no_gpu():
    rendered = yaml.safe_load(render_compose(cpu_only_table()))["services"]
    service = rendered["cpu-model"]
    assert service["profiles"] == ["cpu"] and not gpu_devices(service)
    assert service["ports"] == ["5009:5001"] and "python:3." in service["build"]["args"]["BASE_IMAGE"]
    assert len(rendered) == len(yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]) + 1
