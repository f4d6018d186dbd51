#!/usr/bin/env python3
"""The service table (services.toml) for shell scripts, the Makefile, Cloud Build and the tests.

Standard library only, Python >= 3.11 (tomllib); gcloud's bundled Python works too. Commands:

  services.py names                     the services, one per line
  services.py resolve WORD              the service a name, alias or Cloud Run service name means
  services.py get NAME FIELD            one field (dotted: cloudrun.cpu); a table prints KEY=VALUE lines
  services.py build-args NAME [local|cpu]   KEY=VALUE build arguments of the service's image
  services.py compose                   docker-compose.yml, rendered from the table
  services.py check                     validate the table (exit 1 with the problems)
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "services.toml"
REQUIRED = {"package", "port", "image", "dockerfile", "lock", "model", "local_model", "gpu",
            "url_env", "env_prefix", "cloudrun", "job", "compose"}
CLOUDRUN_KEYS = {"service", "cpu", "memory", "timeout", "min_instances", "max_instances", "web_threads",
                 "max_batch_size", "max_wait_ms", "processes_per_gpu"}
JOB_KEYS = {"name", "gpu", "cpu", "memory", "tasks", "parallelism", "max_retries", "task_timeout"}
# A CPU service (gpu = false) has only its CPU variant in compose; a GPU service has both.
COMPOSE_KEYS = {"cpu", "cpu_port"}
GPU_COMPOSE_KEYS = {"gpu", "gpu_port"}
# The base image of each variant: a name of requirements/base-images.lock.
BASE_IMAGES = {"gpu": "CUDA_BASE_IMAGE", "cpu": "CPU_BASE_IMAGE"}


def load(path: Path = TABLE) -> dict[str, dict]:
    """The table: service name -> its fields."""
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def resolve(services: dict[str, dict], word: str) -> str:
    """The service that ``word`` names (its name, an alias, its image or Cloud Run service); KeyError if none."""
    for name, service in services.items():
        if word == name or word in service.get("aliases", []) or word in (
                service["image"], service["cloudrun"]["service"]):
            return name
    raise KeyError(word)


def field(service: dict, dotted: str):
    """A field by dotted path (cloudrun.cpu)."""
    value = service
    for part in dotted.split("."):
        value = value[part]
    return value


def scalar(value) -> str:
    """A value as shell scripts read it: true/false for booleans."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def env_words(mapping: dict) -> str:
    """KEY=VALUE pairs, space-separated (a build argument the Dockerfiles split on spaces)."""
    return " ".join(f"{key}={scalar(value)}" for key, value in mapping.items())


def build_args(service: dict, variant: str = "") -> dict[str, str]:
    """Build arguments of the service's image; ``local`` bakes its offline model, ``cpu`` the CPU variant."""
    model = service["local_model"] if variant == "local" else (
        service["compose"].get("cpu_model", service["model"]) if variant == "cpu" else service["model"])
    args = {"APP": service["package"], "LOCK": service["lock"], "BAKE_LOCK": service.get("bake_lock", ""),
            "MODEL_ENV": env_words(model), "PORT": str(service["port"])}
    if variant == "cpu" or not service["gpu"]:  # a CPU service's image is its CPU variant
        args["BASE_IMAGE"] = "python:3.11-slim"
    return args


def problems(services: dict[str, dict]) -> list[str]:
    """What is wrong with the table, one line each (empty: nothing)."""
    found, seen = [], {}
    for name, service in services.items():
        missing = REQUIRED - set(service)
        missing |= {f"cloudrun.{k}" for k in CLOUDRUN_KEYS - set(service.get("cloudrun", {}))}
        missing |= {f"job.{k}" for k in JOB_KEYS - set(service.get("job", {}))}
        compose_keys = COMPOSE_KEYS | (GPU_COMPOSE_KEYS if service.get("gpu") else set())
        missing |= {f"compose.{k}" for k in compose_keys - set(service.get("compose", {}))}
        found += [f"{name}: missing {m}" for m in sorted(missing)]
        if missing:
            continue
        for path in (service["dockerfile"], f"requirements/{service['lock']}"):
            if not (ROOT / path).is_file():
                found.append(f"{name}: {path} does not exist")
        if not (ROOT / service["package"] / "__main__.py").is_file():
            found.append(f"{name}: {service['package']}/__main__.py does not exist")
        words = [name, *service.get("aliases", []), service["image"], service["cloudrun"]["service"]]
        variants = compose_variants(service)
        ports = [f"port {service['compose'][f'{v}_port']}" for v in variants]
        for word in dict.fromkeys(words + ports + [service["compose"][v] for v in variants]):
            if word in seen and seen[word] != name:
                found.append(f"{name}: {word} is also {seen[word]}'s")
            seen[word] = name
    return found


def compose_variants(service: dict) -> tuple[str, ...]:
    """The compose services of a table entry: the GPU image and its CPU variant, or the CPU image alone."""
    return ("gpu", "cpu") if service["gpu"] else ("cpu",)


def compose(services: dict[str, dict]) -> str:
    """docker-compose.yml: a GPU service and its CPU variant for each GPU service of the table, the
    CPU image alone for a CPU service."""
    out = [COMPOSE_HEADER]
    for service in services.values():
        prefix = service["env_prefix"]
        for variant in compose_variants(service):
            spec = service["compose"]
            cpu = variant == "cpu"
            # ${VAR:-default}: the GPU variant reads the model's own variables, the CPU one CPU_VAR.
            model = spec.get("cpu_model", service["model"]) if cpu else service["model"]
            model = {key: f"${{{'CPU_' if cpu else ''}{key}:-{value}}}" for key, value in model.items()}
            cloudrun = service["cloudrun"]
            tuned = {"WEB_THREADS": cloudrun["web_threads"], "MAX_BATCH_SIZE": cloudrun["max_batch_size"],
                     "MAX_WAIT_MS": cloudrun["max_wait_ms"]}
            tuned |= spec.get("cpu_env", {}) if cpu else {}
            fixed = {key: value for key, value in tuned.items() if key not in ("WEB_THREADS", "MAX_BATCH_SIZE",
                                                                                "MAX_WAIT_MS")}
            env = {**model, "PORT": service["port"],
                   **{key: f"${{{prefix}_{'CPU_' if cpu else ''}{key}:-{tuned[key]}}}"
                      for key in ("WEB_THREADS", "MAX_BATCH_SIZE", "MAX_WAIT_MS")}, **fixed}
            if not cpu and cloudrun.get("device"):
                env[cloudrun["device"]] = "cuda"  # as on Cloud Run: no silent fall-back to the CPU
            args = {key: value for key, value in build_args(service).items() if key != "MODEL_ENV"}
            args["MODEL_ENV"] = " ".join(f"{key}={value}" for key, value in model.items())
            base = BASE_IMAGES[variant]
            args["BASE_IMAGE"] = f"${{{base}:-{DEFAULT_BASES[base]}}}"
            port = spec[f"{variant}_port"]
            lines = [f"  {spec[variant]}:", f"    profiles: [{variant}]", "    build:", "      context: .",
                     f"      dockerfile: {service['dockerfile']}", "      args:"]
            lines += [f"        {key}: {quoted(value)}" for key, value in args.items()]
            lines += [f"    image: gpu-inference/{service['image']}:local{'-cpu' if cpu else ''}",
                      "    ports:", f'      - "{port}:{service["port"]}"', "    environment:",
                      "      <<: *limits-env"]
            lines += [f"      {key}: {quoted(value)}" for key, value in env.items()]
            lines += ["    volumes:", "      - model-cache:/home/app/.cache"]
            if not cpu:
                lines.append("    deploy: *one-gpu")
            health = (f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{service['port']}"
                      f"/health', timeout=4)")
            lines += ["    healthcheck:", f"      test: {json.dumps(['CMD', 'python', '-c', health])}",
                      "      interval: 15s", "      timeout: 5s", "      retries: 3", "      start_period: 180s",
                      "    stop_grace_period: 10s", "    restart: unless-stopped", ""]
            out.append("\n".join(lines))
    out.append(COMPOSE_FOOTER)
    return "\n".join(out)


def quoted(value) -> str:
    """A YAML scalar: JSON's double-quoted string is valid YAML."""
    return json.dumps(scalar(value))


def base_image_tags() -> dict[str, str]:
    """The tags (digests dropped) of requirements/base-images.lock: the compose file's defaults."""
    lines = (ROOT / "requirements/base-images.lock").read_text().splitlines()
    pins = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {name: ref.split("@")[0] for name, ref in pins.items()}


DEFAULT_BASES = base_image_tags()

COMPOSE_HEADER = """\
# GENERATED from services.toml by `python3 scripts/services.py compose > docker-compose.yml`;
# do not edit (tests/shipping/test_compose.py checks that this file equals the render).
# Local runs of the same images Cloud Run serves (see docs/deploy.md, "Local runs with docker compose").
#
#   docker compose --profile cpu up  # every service's CPU variant, on a laptop without a GPU
#   docker compose --profile gpu up  # the GPU images Cloud Run runs (needs the NVIDIA container toolkit)
#   docker compose up worker-slim    # one service by name (its profile need not be active)
#
# Each service of the table has two compose services (names and host ports in its [NAME.compose]):
# the GPU image (profile gpu, one GPU reserved) and its CPU variant (profile cpu, BASE_IMAGE
# python:3.11-slim). Every service is in a profile, so a plain `docker compose up` starts nothing
# by surprise; host ports differ, so both profiles can run at once.
#
# API_KEY, RATE_LIMIT, ... come from your shell or a .env file next to this one; unset API_KEY
# leaves the services open, as in local development. docs/deploy.md lists every variable read here.
# CUDA_BASE_IMAGE / CPU_BASE_IMAGE default to the tags of requirements/base-images.lock; build
# from its digests with: docker compose --env-file .env --env-file requirements/base-images.lock ...
name: gpu-inference

x-limits-env: &limits-env
  API_KEY: ${API_KEY:-}
  RATE_LIMIT: ${RATE_LIMIT:-}
  RATE_LIMIT_STORAGE_URI: ${RATE_LIMIT_STORAGE_URI:-memory://}
  MAX_REQUEST_MB: ${MAX_REQUEST_MB:-30}
  MODELS_DIR: /models
  HF_HUB_OFFLINE: "1"

# One whole GPU per GPU service, as on Cloud Run (one L4 per instance).
x-one-gpu: &one-gpu
  resources:
    reservations:
      devices:
        - driver: nvidia
          count: 1
          capabilities: [gpu]

services:"""

COMPOSE_FOOTER = """\
# Caches the services write at run time (Hugging Face, torch and CTranslate2 caches under
# ~/.cache), kept across container restarts. The baked weights in /models are deliberately NOT
# on a volume: a volume would keep serving the old model after you rebuild with another one.
volumes:
  model-cache:"""


def main(argv: list[str]) -> int:
    """The command line of the module docstring."""
    services = load()
    command, *args = argv or ["names"]
    try:
        if command == "names":
            print("\n".join(services))
        elif command == "resolve":
            print(resolve(services, args[0]))
        elif command == "get":
            value = field(services[resolve(services, args[0])], args[1])
            if isinstance(value, dict):
                print("\n".join(f"{key}={scalar(item)}" for key, item in value.items()))
            elif isinstance(value, list):
                print("\n".join(map(scalar, value)))
            else:
                print(scalar(value))
        elif command == "build-args":
            variant = args[1] if len(args) > 1 else ""
            for key, value in build_args(services[resolve(services, args[0])], variant).items():
                print(f"{key}={value}")
        elif command == "compose":
            print(compose(services), end="")
        elif command == "check":
            found = problems(services)
            print("\n".join(found) or f"services.toml: {len(services)} services, no problems")
            return 1 if found else 0
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except KeyError as missing:
        print(f"services.py: unknown service or field {missing}; services: {', '.join(services)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
