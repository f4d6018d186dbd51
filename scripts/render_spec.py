#!/usr/bin/env python3
"""Cloud Run specs (Knative YAML) of a service of services.toml, from the table and deploy.env.

  render_spec.py service NAME    the Service that `gcloud run services replace` applies
  render_spec.py job NAME        the Job that `gcloud run jobs replace` applies
  render_spec.py mask URI        URI with its password replaced by *** (for anything printed)

deploy-cloudrun.sh exports its settings (deploy.env, then flags) and calls this; the spec is the
whole configuration, so a setting removed from deploy.env leaves the service too. Standard library
only (Python >= 3.11, or gcloud's bundled Python). A setting that would put a secret in a plain
variable is refused here (exit 2), whatever path it came by.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.capacity import L4_MEMORY_BYTES, MIB, instance_concurrency, processes_per_instance  # noqa: E402
from scripts.services import load, resolve, scalar  # noqa: E402

LABELS = {"app": "gpu-inference"}
L4 = {"run.googleapis.com/accelerator": "nvidia-l4"}
# Cloud Run's L4 minimums (docs: 4 CPU and 16 GiB).
L4_MIN_CPU, L4_MIN_MEMORY_GIB = 4, 16
# A startup probe's periodSeconds x failureThreshold and its initialDelaySeconds may each reach 240 s.
PROBE_BUDGET_S = 240


class Refused(Exception):
    """A setting the kit will not deploy; the message says why and what to do."""


def setting(service: dict, key: str, job: bool = False):
    """PREFIX_KEY (PREFIX_JOB_KEY for a job) from the environment, else the table's default."""
    env = f"{service['env_prefix']}_{'JOB_' if job else ''}{key.upper()}"
    section = service["job"] if job else service["cloudrun"]
    return os.environ.get(env) or section.get(key)


def env(name: str, default: str = "") -> str:
    """A deploy setting exported by deploy-cloudrun.sh."""
    return os.environ.get(name, default)


def truthy(value) -> bool:
    """deploy.env's booleans: true/1/yes."""
    return scalar(value).lower() in ("true", "1", "yes")


def mask_uri(uri: str) -> str:
    """The URI with its password replaced by *** (as the services log it)."""
    return re.sub(r"^([A-Za-z0-9+.-]+://)([^:@/]*):([^@/]*)@", r"\1\2:***@", uri)


def model_settings(service: dict) -> dict[str, str]:
    """The model variables: the table's defaults, each overridable in deploy.env under its own name."""
    return {key: env(key, scalar(value)) for key, value in service["model"].items()}


def plain_env(pairs: dict[str, str]) -> list[dict]:
    """Container env entries; refuses what belongs in Secret Manager."""
    for key, value in pairs.items():
        if key in ("API_KEY", "CALLBACK_SECRET"):
            raise Refused(f"{key} must not be a plain env var; it comes from Secret Manager "
                          f"({'API_KEY_SECRET' if key == 'API_KEY' else 'CALLBACK_SECRET_NAME'})")
        # memory:// holds no password; anything else (redis://:PASSWORD@...) goes through Secret Manager.
        if key == "RATE_LIMIT_STORAGE_URI" and not value.startswith("memory://"):
            raise Refused(f"RATE_LIMIT_STORAGE_URI must not be a plain env var ({mask_uri(value)}): "
                          "set REDIS_URI_SECRET and pass --redis-uri-file FILE")
        if key == "JOB_STORE_URI" and value.startswith("redis"):
            raise Refused(f"JOB_STORE_URI must not be a Redis URI in a plain env var ({mask_uri(value)}): "
                          "set REDIS_URI_SECRET")
    return [{"name": key, "value": value} for key, value in pairs.items()]


def pinned_versions() -> dict[str, str]:
    """SECRET=VERSION pairs resolved by the deploy script (SECRET_VERSIONS): never `latest`."""
    pairs = dict(pair.split("=", 1) for pair in env("SECRET_VERSIONS").split() if "=" in pair)
    for secret, version in pairs.items():
        if version == "latest":
            raise Refused(f"secret {secret}: pin a version, not latest (instances of one revision must agree)")
    return pairs


def secret_env() -> list[dict]:
    """The secrets the services read, each at the version pinned at deploy."""
    versions, wanted = pinned_versions(), []
    if env("API_KEY_SECRET"):
        wanted.append(("API_KEY", env("API_KEY_SECRET")))
    if env("REDIS_URI_SECRET"):
        wanted.append(("RATE_LIMIT_STORAGE_URI", env("REDIS_URI_SECRET")))
        if not env("JOB_STORE_BUCKET"):  # job records shared through Redis too
            wanted.append(("JOB_STORE_URI", env("REDIS_URI_SECRET")))
    if env("CALLBACK_SECRET_NAME"):
        wanted.append(("CALLBACK_SECRET", env("CALLBACK_SECRET_NAME")))
    entries = []
    for name, secret in wanted:
        if secret not in versions:
            raise Refused(f"secret {secret} has no pinned version (SECRET_VERSIONS)")
        entries.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": versions[secret]}}})
    return entries


def vpc_annotations(with_redis: bool) -> dict[str, str]:
    """Direct VPC egress (or a connector) when Redis is configured (services) or a network is named."""
    if not (with_redis and env("REDIS_URI_SECRET")) and not any(
            env(v) for v in ("VPC_NETWORK", "VPC_SUBNET", "VPC_CONNECTOR")):
        return {}
    egress = env("VPC_EGRESS", "private-ranges-only")
    if egress not in ("private-ranges-only", "all-traffic"):
        raise Refused(f"VPC_EGRESS must be private-ranges-only or all-traffic, not {egress}")
    if env("VPC_CONNECTOR"):
        return {"run.googleapis.com/vpc-access-connector": env("VPC_CONNECTOR"),
                "run.googleapis.com/vpc-access-egress": egress}
    network = env("VPC_NETWORK") or "default"
    interfaces = [{"network": network, "subnetwork": env("VPC_SUBNET") or network}]
    return {"run.googleapis.com/network-interfaces": json.dumps(interfaces, separators=(",", ":")),
            "run.googleapis.com/vpc-access-egress": egress}


def models_from(service: dict) -> tuple[list[dict], list[dict]]:
    """(volumes, mounts) for MODELS_FROM=gs://BUCKET/PATH: the weights read-only from Cloud Storage."""
    source = env("MODELS_FROM")
    if not source:
        return [], []
    match = re.fullmatch(r"gs://([a-z0-9][a-z0-9._-]+)(?:/(.*?))?/?", source)
    if not match:
        raise Refused(f"MODELS_FROM must be gs://BUCKET[/PATH], not {source}")
    attributes = {"bucketName": match.group(1)}
    if match.group(2):
        attributes["mountOptions"] = f"only-dir={match.group(2)}"
    volume = {"name": "models", "csi": {"driver": "gcsfuse.run.googleapis.com", "readOnly": True,
                                        "volumeAttributes": attributes}}
    return [volume], [{"name": "models", "mountPath": "/models", "readOnly": True}]


def resources(cpu, memory, gpu: bool) -> dict:
    """Container limits; a GPU needs Cloud Run's L4 minimums."""
    if gpu:
        gib = float(str(memory).removesuffix("Gi")) if str(memory).endswith("Gi") else 0
        if float(cpu) < L4_MIN_CPU or gib < L4_MIN_MEMORY_GIB:
            raise Refused(f"an L4 needs at least {L4_MIN_CPU} CPU and {L4_MIN_MEMORY_GIB}Gi, not {cpu} and {memory}")
    limits = {"cpu": scalar(cpu), "memory": scalar(memory)}
    if gpu:
        limits["nvidia.com/gpu"] = "1"
    return {"limits": limits}


def image(service: dict) -> str:
    """The service's image in Artifact Registry, at this deploy's tag."""
    return (f"{env('REGION')}-docker.pkg.dev/{env('PROJECT')}/{env('AR_REPO', 'gpu-inference')}/"
            f"{service['image']}:{env('IMAGE_TAG')}")


def probe(path: str, port: int, prefix: str, startup: bool) -> dict:
    """A startup or liveness probe from the *_PROBE_* settings."""
    period, threshold = int(env(f"{prefix}_PERIOD_S")), int(env(f"{prefix}_FAILURE_THRESHOLD"))
    timeout = int(env(f"{prefix}_TIMEOUT_S"))
    if timeout > period:
        raise Refused(f"{'' if startup else 'liveness '}probe timeout must be <= its period")
    spec = {"httpGet": {"path": path, "port": port}, "timeoutSeconds": timeout, "periodSeconds": period,
            "failureThreshold": threshold}
    if startup:
        delay = int(env("STARTUP_PROBE_INITIAL_DELAY_S", "0"))
        if period * threshold > PROBE_BUDGET_S or delay > PROBE_BUDGET_S:
            raise Refused(f"startup probe budget: period x failureThreshold = {period * threshold}s and "
                          f"initialDelaySeconds = {delay}s, each at most {PROBE_BUDGET_S}s")
        spec["initialDelaySeconds"] = delay
    return spec


def capacity(service: dict, gpu: bool) -> tuple[int, int]:
    """(processes per instance, concurrency) by core/capacity.py's one rule, for the instance the spec asks
    for: its vCPUs, one L4 (its memory against the table's weights_mb, when given) or none."""
    threads, batch = int(setting(service, "web_threads")), int(setting(service, "max_batch_size"))
    per_gpu = int(setting(service, "processes_per_gpu")) or None
    cpus_per_process = int(setting(service, "cpus_per_process") or 0) or None
    weights_mb = setting(service, "weights_mb")
    processes = processes_per_instance(int(float(setting(service, "cpu"))), 1 if gpu else 0, per_gpu,
                                       L4_MEMORY_BYTES if gpu else None,
                                       int(weights_mb) * MIB if weights_mb else None,
                                       cpus_per_process=cpus_per_process)
    return processes, instance_concurrency(processes, threads, batch)


def service_env(service: dict) -> dict[str, str]:
    """The service's plain settings (PORT is Cloud Run's: it sets it from containerPort)."""
    pairs = {"MODELS_DIR": "/models", "HF_HUB_OFFLINE": "1", **model_settings(service),
             "WEB_THREADS": scalar(setting(service, "web_threads")),
             "MAX_BATCH_SIZE": scalar(setting(service, "max_batch_size")),
             "MAX_WAIT_MS": scalar(setting(service, "max_wait_ms")), "MAX_REQUEST_MB": env("MAX_REQUEST_MB", "30")}
    if service["gpu"] and service["cloudrun"].get("device"):
        # Explicit, so a broken CUDA fails the start with a clear log line instead of serving from the CPU.
        pairs[service["cloudrun"]["device"]] = "cuda"
    for name in ("RATE_LIMIT", "RATE_LIMIT_STORAGE_URI"):
        if env(name):
            pairs[name] = env(name)
    events_output = env(f"{service['env_prefix']}_EVENTS_OUTPUT")
    if events_output:
        pairs["EVENTS_OUTPUT"] = events_output
    if env("JOB_STORE_BUCKET"):
        pairs["JOB_STORE_URI"] = f"gs://{env('JOB_STORE_BUCKET')}/jobs/{setting(service, 'service')}"
    if truthy(env(f"{service['env_prefix']}_DURABLE", "false")):
        # Durable callback jobs (docs/reliability.md): the topic `deploy-cloudrun.sh durable` made.
        pairs["JOB_TOPIC"] = f"projects/{env('PROJECT')}/topics/{setting(service, 'service')}-jobs"
    for extra in env("EXTRA_ENV_VARS").split():
        key, _, value = extra.partition("=")
        pairs[key] = value
    return pairs


def traffic(name: str) -> list[dict]:
    """All traffic to the new revision; with NO_TRAFFIC, the live split kept and the new one tagged at 0%."""
    if not truthy(env("NO_TRAFFIC", "false")):
        return [{"latestRevision": True, "percent": 100}]
    tag = env("TRAFFIC_TAG")
    live = json.loads(env("CURRENT_SERVICE") or "{}").get("status", {}).get("traffic", [])
    kept = []
    for entry in live:
        if not entry.get("revisionName"):
            continue
        # The tag moves to the new revision; the revision that had it keeps its share of traffic.
        keys = ("revisionName", "percent") if entry.get("tag") == tag else ("revisionName", "percent", "tag")
        kept_entry = {key: entry[key] for key in keys if key in entry}
        if kept_entry.get("percent") or "tag" in kept_entry:
            kept.append(kept_entry)
    if not kept:  # a new service has nothing else to serve
        return [{"latestRevision": True, "percent": 100, "tag": tag}]
    return [*kept, {"latestRevision": True, "percent": 0, "tag": tag}]


def render_service(service: dict) -> dict:
    """The Knative Service of one table entry."""
    name, port, gpu = setting(service, "service"), service["port"], bool(service["gpu"])
    processes, concurrency = capacity(service, gpu)
    annotations = {"autoscaling.knative.dev/minScale": scalar(setting(service, "min_instances")),
                   "autoscaling.knative.dev/maxScale": scalar(setting(service, "max_instances")),
                   # CPU always allocated: the batcher thread works between requests; GPUs require it.
                   "run.googleapis.com/cpu-throttling": "false",
                   **vpc_annotations(with_redis=True)}
    if gpu:
        annotations["run.googleapis.com/gpu-zonal-redundancy-disabled"] = scalar(
            not truthy(env("GPU_ZONAL_REDUNDANCY", "false")))
    volumes, mounts = models_from(service)
    container = {"image": image(service), "ports": [{"name": "http1", "containerPort": port}],
                 "env": plain_env(service_env(service)) + secret_env(),
                 "resources": resources(setting(service, "cpu"), setting(service, "memory"), gpu),
                 "startupProbe": probe("/health", port, "STARTUP_PROBE", startup=True)}
    if env("LIVENESS_PROBE_PATH"):
        container["livenessProbe"] = probe(env("LIVENESS_PROBE_PATH"), port, "LIVENESS_PROBE", startup=False)
    if mounts:
        container["volumeMounts"] = mounts
    spec = {"containerConcurrency": concurrency, "timeoutSeconds": int(setting(service, "timeout")),
            "serviceAccountName": env("SERVICE_ACCOUNT"), "containers": [container]}
    if gpu:
        spec["nodeSelector"] = dict(L4)
    if volumes:
        spec["volumes"] = volumes
    labels = {**LABELS, "component": service_key(service)}
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {"template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec},
                     "traffic": traffic(name)}}


def service_key(service: dict) -> str:
    """The table's name of this entry (the label Cloud Run resources carry)."""
    return service["_name"]


def render_job(service: dict) -> dict:
    """The Cloud Run Job of one table entry: python -m PACKAGE.job in the service's image."""
    gpu = truthy(setting(service, "gpu", job=True))
    tasks = int(env("JOB_TASKS_ARG") or setting(service, "tasks", job=True))
    parallelism = int(env("JOB_PARALLELISM_ARG") or setting(service, "parallelism", job=True))
    if tasks < 1 or parallelism < 0:
        raise Refused("job: --tasks must be >= 1 and --parallelism >= 0")
    if parallelism > tasks:
        raise Refused(f"job: parallelism {parallelism} > tasks {tasks}")
    pairs = {"MODELS_DIR": "/models", "HF_HUB_OFFLINE": "1", **model_settings(service),
             "MAX_BATCH_SIZE": scalar(setting(service, "max_batch_size"))}
    if gpu and service["cloudrun"].get("device"):
        pairs[service["cloudrun"]["device"]] = "cuda"
    for key in ("INPUT", "OUTPUT"):
        value = env(f"JOB_{key}_ARG") or env(f"{service['env_prefix']}_JOB_{key}")
        if value:
            pairs[f"JOB_{key}"] = value
    volumes, mounts = models_from(service)
    container = {"image": image(service), "command": ["python"], "args": ["-m", f"{service['package']}.job"],
                 "env": plain_env(pairs),
                 "resources": resources(setting(service, "cpu", job=True), setting(service, "memory", job=True), gpu)}
    if mounts:
        container["volumeMounts"] = mounts
    timeout = scalar(setting(service, "task_timeout", job=True)).removesuffix("s")
    task = {"containers": [container], "maxRetries": int(setting(service, "max_retries", job=True)),
            "timeoutSeconds": int(timeout), "serviceAccountName": env("JOB_SERVICE_ACCOUNT")}
    annotations = vpc_annotations(with_redis=False)
    if gpu:
        task["nodeSelector"] = dict(L4)
        # Google: GPU jobs run without zonal redundancy (best-effort failover, the cheaper GPU price);
        # stated here so the spec says what the job gets.
        annotations["run.googleapis.com/gpu-zonal-redundancy-disabled"] = "true"
    if volumes:
        task["volumes"] = volumes
    labels = {**LABELS, "component": f"{service_key(service)}-job"}
    metadata = {"name": setting(service, "name", job=True), "labels": labels}
    if gpu:
        metadata["annotations"] = {"run.googleapis.com/launch-stage": "BETA"}  # GPU jobs: beta in gcloud 528
    template = {"spec": {"parallelism": parallelism, "taskCount": tasks, "template": {"spec": task}}}
    if annotations:
        template["metadata"] = {"annotations": annotations}
    return {"apiVersion": "run.googleapis.com/v1", "kind": "Job", "metadata": metadata,
            "spec": {"template": template}}


def to_yaml(value, indent: int = 0) -> str:
    """Block YAML for dicts, lists and scalars; strings JSON-quoted (valid YAML, never retyped)."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {to_yaml(item)}")
        return "\n".join(lines)
    if isinstance(value, list):
        lines = []
        for item in value:
            text = to_yaml(item, indent + 2)
            lines.append(f"{pad}- {text.lstrip()}" if isinstance(item, (dict, list)) else f"{pad}- {text}")
        return "\n".join(lines)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def main(argv: list[str]) -> int:
    """The command line of the module docstring."""
    if len(argv) != 2 or argv[0] not in ("service", "job", "mask"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "mask":
        print(mask_uri(argv[1]))
        return 0
    services = load()
    try:
        name = resolve(services, argv[1])
    except KeyError:
        print(f"error: unknown service '{argv[1]}' ({', '.join(services)})", file=sys.stderr)
        return 2
    service = {**services[name], "_name": name}
    try:
        spec = render_service(service) if argv[0] == "service" else render_job(service)
    except Refused as refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    print(f"# {argv[0]} {name}: rendered from services.toml and deploy.env by deploy-cloudrun.sh; "
          f"applied with gcloud run {argv[0]}s replace")
    if argv[0] == "service":
        processes, concurrency = capacity(service, bool(service["gpu"]))
        # WEB_WORKERS stays unset: gunicorn applies the same rule to the weights the image really holds.
        print(f"# core/capacity.py: {processes} processes per instance x min(WEB_THREADS, 2 x MAX_BATCH_SIZE)"
              f" = containerConcurrency {concurrency}")
    print(to_yaml(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
