"""Helpers shared by the shipping tests: repo paths, a small Dockerfile parser, the deploy script."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scripts.services import load as load_table

REPO = Path(__file__).resolve().parents[2]
DEPLOY_SCRIPT = REPO / "deploy-cloudrun.sh"
# (Dockerfile, the build arguments of one service of services.toml): every service of the table
# builds from one of the two Dockerfiles with its own arguments (APP, LOCK, MODEL_ENV, PORT, ...).
DOCKERFILES = sorted({(s["dockerfile"], name) for name, s in load_table().items()})


@dataclass
class Instruction:
    """One Dockerfile instruction with its continuation lines joined."""

    keyword: str
    args: str
    line: int
    stage: str


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions in order, each tagged with its stage name (or index); comments dropped."""
    instructions: list[Instruction] = []
    stage, stage_count = "global", 0
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        # Docker drops comment lines, even inside a continued instruction.
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\s+AS\s+(\S+)\s*$", args, re.IGNORECASE)
            stage = match.group(1) if match else str(stage_count)
            stage_count += 1
        instructions.append(Instruction(keyword, args.strip(), start, stage))
    return instructions


def stage_names(instructions: list[Instruction]) -> list[str]:
    """Names of the build stages, in order."""
    return [i.stage for i in instructions if i.keyword == "FROM"]


def copy_sources(instruction: Instruction) -> list[str] | None:
    """Sources of a COPY/ADD from the build context; None when it copies from a stage or image."""
    if instruction.args.startswith("["):
        parts = json.loads(instruction.args)
    else:
        parts = shlex.split(instruction.args)
    flags = [p for p in parts if p.startswith("--")]
    if any(f.startswith("--from=") for f in flags):
        return None
    paths = [p for p in parts if not p.startswith("--")]
    return paths[:-1]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore patterns exclude ``path`` (last match wins, parents count)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            pattern_options = [pattern, pattern[3:]]
        else:
            pattern_options = [pattern]
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in pattern_options):
            excluded = not negate
    return excluded


def read_dockerignore() -> list[str]:
    """The .dockerignore patterns, comments and blanks dropped."""
    path = REPO / ".dockerignore"
    if not path.exists():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment for the deploy script: no stray settings from the developer's shell;
    the rendered specs go under tmp_path."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8", "SPEC_DIR": str(tmp_path / "specs")}
    env.update(extra)
    return env


def run_deploy(tmp_path: Path, *args: str, env_file: str | None = None,
               extra_env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    """Run deploy-cloudrun.sh with an explicit (by default empty) env file, capture output."""
    if env_file is None:
        # Builds accept the repo's base-images.lock even while its digests are unresolved (written
        # without registry access); test_supply_chain.py checks the refusal without this line.
        default = tmp_path / "default.env"
        default.write_text("ALLOW_UNPINNED_BASE=true\n")
        env_file = str(default)
    return subprocess.run(
        ["bash", str(DEPLOY_SCRIPT), "--env-file", env_file, *args],
        cwd=tmp_path, env=script_env(tmp_path, **(extra_env or {})), input=stdin,
        capture_output=True, text=True, timeout=60)


def dry_run_lines(tmp_path: Path, *args: str, **kwargs) -> list[str]:
    """The commands a dry run prints (stdout), one per line; the run must succeed."""
    result = run_deploy(tmp_path, "--dry-run", *args, **kwargs)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.strip()]


def flag_values(argv: list[str], flag: str) -> list[str]:
    """Values of ``--flag=value`` / ``--flag value`` in argv."""
    values = []
    for index, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1:])
        elif arg == flag and index + 1 < len(argv):
            values.append(argv[index + 1])
    return values


# Scenarios whose dry-run output the tests check, and the real gcloud then parses.
PROJECT, REGION = "demo-project-123", "us-central1"
TARGET = ["--project", PROJECT, "--region", REGION]


def scenario_args(api_key_file: Path) -> dict[str, list[str]]:
    """Named argument lists covering every command of the deploy script.

    A fixed --image-tag makes the lines scenarios share identical, so each runs through gcloud once.
    """
    return {
        "deploy-all": [PROJECT, REGION, "--api-key-file", str(api_key_file), "--image-tag", "t1"],
        "deploy-zonal": [*TARGET, "deploy", "worker", "--zonal-redundancy", "--skip-build",
                         "--image-tag", "t1"],
        "staged": [*TARGET, "deploy", "clip", "--no-traffic", "--tag", "canary", "--image-tag", "t1"],
        "split": [*TARGET, "traffic", "clip", "canary=10"],
        "promote": [*TARGET, "promote", "clip"],
        "rollback": [*TARGET, "rollback", "worker", "whisper-worker-00002-abc"],
        "status": [*TARGET, "status"],
        "url": [*TARGET, "url", "clip"],
        "logs": [*TARGET, "logs", "worker"],
        "delete": [*TARGET, "delete", "all", "--yes"],
        "build": [*TARGET, "build", "--image-tag", "t1"],
        "deploy-redis": [*TARGET, "deploy", "worker", "--skip-build", "--image-tag", "t1"],
        "deploy-connector": [*TARGET, "deploy", "clip", "--skip-build", "--image-tag", "t1"],
        "job-cpu-deploy": [*TARGET, "job", "clip", "deploy", "--image-tag", "t1"],
        "job-gpu-deploy": [*TARGET, "job", "worker", "deploy", "--skip-build", "--image-tag", "t1",
                           "--tasks", "6", "--parallelism", "3"],
        "job-cpu-execute": [*TARGET, "job", "clip", "execute", "--input", "gs://in-bucket/more/",
                            "--output", "gs://out-bucket/more/", "--tasks", "4", "--wait"],
        "job-gpu-execute": [*TARGET, "job", "worker", "execute"],
        "job-gpu-status": [*TARGET, "job", "worker", "status"],
        "job-cpu-status": [*TARGET, "job", "clip", "status"],
        "job-gpu-logs": [*TARGET, "job", "worker", "logs"],
        "triggers-all": [*TARGET, "triggers", "worker", "pubsub", "eventarc", "tasks"],
        "triggers-default": [*TARGET, "triggers", "clip"],
        "durable": [*TARGET, "durable", "worker"],
        "alerts": [*TARGET, "alerts"],
        # Every service of the table, its job too (a CPU service: textembed).
        **{f"deploy-{name}": [*TARGET, "deploy", name, "--image-tag", "t1"] for name in load_table()},
        **{f"job-{name}-deploy": [*TARGET, "job", name, "deploy", "--image-tag", "t1"] for name in load_table()},
    }


# Buckets and secrets of the event, job and Redis scenarios (environment beats the empty env file).
EVENTS_ENV = {"WORKER_EVENTS_BUCKET": "audio-uploads", "WORKER_EVENTS_PREFIX": "incoming/",
              "WORKER_EVENTS_OUTPUT": "gs://inference-results/transcripts",
              "CLIP_JOB_INPUT": "gs://in-bucket/images/", "CLIP_JOB_OUTPUT": "gs://out-bucket/embeddings/",
              "WORKER_JOB_INPUT": "gs://audio-uploads/batch/manifest.txt",
              "WORKER_JOB_OUTPUT": "gs://inference-results/batch/"}
REDIS_ENV = {"REDIS_URI_SECRET": "gpu-inference-redis-uri", "CALLBACK_SECRET_NAME": "gpu-inference-callback"}

# Environment of some scenarios: a value with commas makes the script use gcloud's ^DELIM^ syntax.
SCENARIO_ENV = {"deploy-zonal": {"RATE_LIMIT": "10/second,100/minute"},
                "deploy-redis": {**REDIS_ENV, **EVENTS_ENV},
                "deploy-connector": {**REDIS_ENV, "VPC_CONNECTOR": "redis-connector", "VPC_EGRESS": "all-traffic"},
                "job-cpu-deploy": EVENTS_ENV, "job-gpu-deploy": {**EVENTS_ENV, **REDIS_ENV},
                # Eventarc cannot carry the API key: its scenario deploys without one (IAM only).
                "triggers-all": {**EVENTS_ENV, "API_KEY_SECRET": "", "ALLOW_UNAUTHENTICATED": "false"},
                "alerts": {"ALERT_CHANNELS": "projects/demo-project-123/notificationChannels/123"},
                "durable": {"JOB_STORE_BUCKET": "my-jobs"}}
