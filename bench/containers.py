"""Run and inspect the built images with buildah (this machine has no Docker engine).

Shared by the container tests (tests/images/) and ``python -m bench images``. A container is a
buildah working container running the image's own CMD with chroot isolation on the host's
network, in its own process group. ``terminate`` sends SIGTERM where Cloud Run sends it: to the
container's PID 1, gunicorn's master (exec'd by ``python -m server|worker``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import requests

from scripts.services import load as load_services

ENV = {**os.environ, "STORAGE_DRIVER": os.environ.get("STORAGE_DRIVER", "overlay"),
       "BUILDAH_ISOLATION": os.environ.get("BUILDAH_ISOLATION", "chroot")}
# The image of every service of services.toml, by its table name: IMAGE:local from `make images`,
# or PREFIX_IMAGE (CLIP_IMAGE, WORKER_IMAGE, TEXTEMBED_IMAGE, ...) as `make run-images` reads it.
IMAGES = {name: os.environ.get(f"{service['env_prefix']}_IMAGE", f"{service['image']}:local")
          for name, service in load_services().items()}
CLIP_IMAGE = IMAGES["clip"]
WORKER_IMAGE = IMAGES["whisper"]


def buildah(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["buildah", *args], env=ENV, capture_output=True, text=True, timeout=timeout, check=check)


def available() -> bool:
    """True when buildah runs here (root, overlay storage unless STORAGE_DRIVER says otherwise)."""
    return shutil.which("buildah") is not None and buildah("version", check=False).returncode == 0


def has_image(image: str) -> bool:
    return buildah("inspect", "--type", "image", image, check=False).returncode == 0


def inspect(image: str) -> dict:
    return json.loads(buildah("inspect", "--type", "image", image).stdout)


class Container:
    """One working container of ``image``; ``start`` runs its CMD, ``exec`` runs more in it."""

    def __init__(self, image: str, volumes: tuple[str, ...] = ()):
        self.image = image
        self.config = inspect(image)["Docker"]["config"]
        args = [arg for volume in volumes for arg in ("--volume", volume)]
        self.name = buildah("from", "--pull-never", *args, image).stdout.strip()
        self.process: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile("w+", prefix="container-", suffix=".log")
        self.started_at = 0.0

    def command(self, argv: list[str], env: dict | None = None) -> list[str]:
        flags = [arg for key, value in (env or {}).items() for arg in ("--env", f"{key}={value}")]
        return ["buildah", "run", *flags, self.name, "--", *argv]

    def start(self, env: dict | None = None, wrap: list[str] | None = None) -> Container:
        """Run the image's CMD (``wrap``: a prefix such as ``unshare -n``) in a new process group."""
        self.started_at = time.monotonic()
        self.process = subprocess.Popen([*(wrap or []), *self.command(self.config["Cmd"], env)], env=ENV,
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def exec(self, argv: list[str], env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv, env), env=ENV, capture_output=True, text=True, timeout=timeout)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def wait_for_line(self, text: str, timeout: float = 300) -> float:
        """Seconds from start until the log shows ``text``."""
        return self._wait(lambda: text in self.output(), f"no {text!r}", timeout)

    def wait_healthy(self, url: str, timeout: float = 300) -> float:
        """Seconds from start until ``url`` answers 200."""

        def healthy() -> bool:
            if "start-up failed" in self.output():  # the service stays up, answering 503: fail now
                raise RuntimeError(f"{self.image}: the model did not load:\n{self.output()[-3000:]}")
            try:
                return requests.get(url, timeout=2).status_code == 200
            except requests.RequestException:
                return False

        return self._wait(healthy, f"{url} not 200", timeout)

    def _wait(self, done, what: str, timeout: float) -> float:
        """Poll ``done()`` until true (seconds since start), the container exits, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return time.monotonic() - self.started_at
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"{self.image} exited {self.process.returncode}:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.image}: {what} in {timeout} s:\n{self.output()[-3000:]}")

    def main_process(self) -> psutil.Process | None:
        """The container's PID 1 after ``python -m server|worker`` exec'd it: the gunicorn master."""
        if self.process is None or self.process.poll() is not None:
            return None
        served = [p for p in psutil.Process(self.process.pid).children(recursive=True)
                  if "gunicorn" in " ".join(p.cmdline())]
        masters = [p for p in served if p.ppid() not in {q.pid for q in served}]
        return masters[0] if masters else None

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM to the gunicorn master, as Cloud Run stops a container; its exit status.

        Not to buildah run, which SIGKILLs its child, nor to the process group, which would reach
        the gunicorn workers directly and cut their in-flight requests.
        """
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        master = self.main_process()
        if master is not None:
            master.send_signal(signal.SIGTERM)
        else:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(10)

    def remove(self) -> None:
        self.terminate()
        buildah("rm", self.name, check=False)
        self.log.close()

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
