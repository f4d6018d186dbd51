"""Run docker-compose.yml with the engine this machine has: ``docker compose``, else ``podman-compose``.

podman (4.3, Debian) runs the images here with runc, the cgroupfs manager, no default ulimits and
a file events log (crun fails on rlimits and on this machine's hybrid cgroups, and there is no
systemd); ``CONTAINERS_CONF`` points podman at such a file unless the caller set one. podman reads
buildah's overlay store, where ``make images`` puts the images (scripts/buildah-env.sh).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
# The models a test may run without a download, by the setting that names them: what `make images`
# bakes into the CPU images (the embedded demo CLIP, tiny.en). Other models' defaults are offline already.
OFFLINE_MODELS = {"CLIP_MODEL": "demo", "WHISPER_MODEL": "tiny.en"}
PODMAN_CONF = """[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
"""


def _answers(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@dataclass
class Engine:
    """One compose implementation: its command, its container CLI and their environment."""

    name: str
    compose: list[str]
    cli: str
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300, check: bool = True, env: dict | None = None,
            project: str | None = None, files: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
        """``compose [-p PROJECT] -f docker-compose.yml [-f EXTRA...] ARGS``, in the repository root."""
        argv = [*self.compose, *(["-p", project] if project else []), "-f", str(COMPOSE_FILE)]
        for extra in files:
            argv += ["-f", str(extra)]
        out = subprocess.run([*argv, *args], cwd=ROOT, env={**self.env, **(env or {})}, capture_output=True,
                             text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv + list(args))} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def container(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """The engine's own CLI (``docker ...`` / ``podman ...``)."""
        out = subprocess.run([self.cli, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"{self.cli} {' '.join(args)} failed: {out.stderr}")
        return out


def find_engine(scratch: Path) -> Engine | None:
    """docker compose where a Docker engine answers, else podman-compose with podman; None if neither."""
    if shutil.which("docker") and _answers(["docker", "info"]) and _answers(["docker", "compose", "version"]):
        return Engine("docker compose", ["docker", "compose"], "docker", dict(os.environ))
    podman_compose = shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose")
    if not shutil.which("podman") or not Path(podman_compose).exists():
        return None
    env = {**os.environ, "STORAGE_DRIVER": os.environ.get("STORAGE_DRIVER", "overlay")}
    if "CONTAINERS_CONF" not in os.environ:
        (scratch / "containers.conf").write_text(PODMAN_CONF)
        env["CONTAINERS_CONF"] = str(scratch / "containers.conf")
    return Engine("podman-compose", [podman_compose, f"--podman-args=--storage-driver={env['STORAGE_DRIVER']}"],
                  "podman", env)


def services(profile: str) -> dict[str, dict]:
    """The compose file's services in ``profile``, by name."""
    spec = yaml.safe_load(COMPOSE_FILE.read_text())
    return {name: service for name, service in spec["services"].items() if profile in service.get("profiles", ())}


def built_image(service: dict) -> str:
    """The tag `make images` gives the CPU image a compose service runs: NAME:cpu-local for image .../NAME:..."""
    return service["image"].rsplit("/", 1)[-1].split(":")[0] + ":cpu-local"


def offline_model_variables(chosen: dict[str, dict]) -> dict[str, str]:
    """The compose variables that pick the services' models (``CLIP_MODEL: ${VAR:-default}``), set to
    the models the built images bake, whatever the compose file names the variables."""
    variables = {}
    for service in chosen.values():
        for key, value in (service.get("environment") or {}).items():
            found = re.fullmatch(r"\$\{(\w+)(?::?-[^}]*)?\}", str(value).strip())
            if key in OFFLINE_MODELS and found:
                variables[found.group(1)] = OFFLINE_MODELS[key]
    return variables


def container_port(service: dict) -> int:
    """The port the service listens on inside its container (the target of its first port mapping)."""
    return int(str(service["ports"][0]).rsplit(":", 1)[1])
