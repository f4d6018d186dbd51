"""gunicorn configuration of every declared service: ``python -m <package>`` execs
``gunicorn --config python:core.gunicorn_conf`` with ``APP_PACKAGE=<package>`` (core/launcher.py),
and the bottom of this module fills gunicorn's settings from that service's declaration.

- gthread workers: threads = request concurrency, so decoding runs in parallel while the
  batcher thread keeps the model busy. The worker class is gthread's with one addition:
  ``GET /livez`` is answered by the worker's main loop, never queued behind busy threads
  (core/web/liveness.py).
- PROMETHEUS_MULTIPROC_DIR is set up here, in the master, so /metrics adds up all workers.
- One worker process per GPU, each pinned to its own GPU through CUDA_VISIBLE_DEVICES, set in
  ``post_fork`` before the app (and torch/CUDA) is imported. The master never imports the app:
  CUDA initialised before a fork breaks the children, and the model would load twice.
- graceful_timeout below Cloud Run's 10 s between SIGTERM and SIGKILL, so in-flight requests
  (and their batches) finish before the instance goes away.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from core.capacity import gpu_memory, processes_per_instance, weights_size
from core.launcher import APP_PACKAGE_ENV
from core.model.admission import WORKER_COUNT_ENV
from core.model.cpus import available_cpus
from core.model.instance import READY_DIR_ENV
from core.settings import CoreSettings

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def visible_gpu_count(environ=os.environ) -> int:
    """GPUs this container can use, found without initialising CUDA in the master."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return len(ids)
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
            return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            return 0
    return 0


def gpu_ids(environ=os.environ) -> list[str]:
    """The GPU ids to hand out to workers, one each."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    return [str(i) for i in range(visible_gpu_count(environ))]


def pick_gpu(taken: list[str | None], available: list[str]) -> str | None:
    """The GPU the fewest live workers hold (a restarted worker takes its predecessor's place).

    ``taken`` has one entry per live worker (its GPU, or None). With one worker per GPU this is
    the first free GPU; with several per GPU they spread evenly.
    """
    if not available:
        return None
    return min(available, key=lambda gpu: (taken.count(gpu), available.index(gpu)))


def default_worker_count(settings: CoreSettings, processes_per_gpu: int | None, environ=os.environ,
                         cpus_per_process: int | None = None) -> int:
    """gunicorn workers when WEB_WORKERS is unset: core.capacity's rule for what this container has.

    The vCPUs, the visible GPUs and their memory (nvidia-smi, no CUDA in the master) and the size of
    the baked weights (all of MODELS_DIR: an image bakes its service's model there).
    """
    gpus = len(gpu_ids(environ))
    return processes_per_instance(
        available_cpus(), gpus, processes_per_gpu,
        gpu_memory_bytes=gpu_memory(environ) if gpus else None,
        weights_bytes=weights_size(settings.models_dir) if gpus else None, cpus_per_process=cpus_per_process)


def _post_worker_init(worker) -> None:
    from core.deferred.async_jobs import gunicorn_post_worker_init  # imported late: this module stays light
    from core.model.runner import gunicorn_post_worker_init as exit_on_load_failure

    gunicorn_post_worker_init(worker)
    exit_on_load_failure(worker)


def _worker_exit(server, worker) -> None:
    from core.deferred.async_jobs import gunicorn_worker_exit
    from core.web.logs import stop_logging

    try:
        gunicorn_worker_exit(server, worker)
    finally:
        # Last: the drain above logs too. Queued lines are written before the worker process ends.
        stop_logging()

def prepare_metrics_dir(environ=os.environ) -> str:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty directory (a new one when unset); returns it.

    Runs in the master before any worker exists, so every worker inherits it and writes its
    samples there (prometheus-client's multiprocess mode, see core/web/metrics.py).
    """
    path = environ.get(METRICS_DIR_ENV)
    if not path:
        path = tempfile.mkdtemp(prefix="prometheus-multiproc-")
        environ[METRICS_DIR_ENV] = path
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):  # a previous run's samples would be added to this one's
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))
    return path


def apply(namespace: dict, settings: CoreSettings, processes_per_gpu: int | None = 1,
          cpus_per_process: int | None = None) -> None:
    """Fill a gunicorn config module's globals from the service settings.

    ``processes_per_gpu`` and ``cpus_per_process``: the service's defaults when WEB_WORKERS is unset
    (see ``core.capacity.processes_per_instance``): on a GPU, None (the CLIP server) is one per vCPU,
    the Whisper worker keeps 1; on a CPU, one process unless ``cpus_per_process`` is set.
    """
    available = gpu_ids()
    workers = settings.web_workers or default_worker_count(settings, processes_per_gpu,
                                                           cpus_per_process=cpus_per_process)

    created = {}

    def on_starting(server):
        had_dir = bool(os.environ.get(METRICS_DIR_ENV))
        path = prepare_metrics_dir()
        if not had_dir:
            created["path"] = path
        # Ready processes mark themselves here; one still loading then waits, not 503 (core/model/instance.py).
        os.environ[READY_DIR_ENV] = created["ready"] = tempfile.mkdtemp(prefix="model-ready-")

    def on_exit(server):
        for key in ("path", "ready"):
            if created.get(key):
                shutil.rmtree(created[key], ignore_errors=True)

    def pre_fork(server, worker):
        taken = [getattr(w, "gpu_id", None) for w in server.WORKERS.values() if w is not worker]
        worker.gpu_id = pick_gpu(taken, available)

    def post_fork(server, worker):
        if worker.gpu_id is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = worker.gpu_id
            server.log.info("worker %s pinned to GPU %s", worker.pid, worker.gpu_id)

    def child_exit(server, worker):
        # The live gauges (queue depth, GPU memory) of a worker that is gone must not be summed.
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    namespace.update(
        bind=f"0.0.0.0:{settings.port}",
        worker_class="core.web.liveness.LivenessWorker",
        workers=workers,
        threads=settings.web_threads,
        # gthread workers heartbeat from their main loop, so this only catches a wedged worker,
        # never a long request; model loading happens in a background thread.
        timeout=120,
        graceful_timeout=int(settings.graceful_timeout_s),
        keepalive=5,
        preload_app=False,
        # gunicorn 27's control socket lives in $HOME, which a non-root container may not have.
        control_socket_disable=True,  # the app (and the model) load in each worker, after fork
        accesslog=None,  # the app writes one structured line per request instead
        errorlog="-",
        loglevel=settings.log_level.lower(),
        pre_fork=pre_fork,
        post_fork=post_fork,
        post_worker_init=_post_worker_init,  # callback_url jobs: drain clock starts at SIGTERM
        worker_exit=_worker_exit,  # callback_url jobs: finish or fail as shutting_down, deliver
        on_starting=on_starting,
        on_exit=on_exit,
        child_exit=child_exit,
        # Each worker divides the instance's decode-memory budget by this (core/model/admission.py).
        raw_env=[f"{WORKER_COUNT_ENV}={workers}"],
        # Cloud Run's front end terminates TLS and forwards X-Forwarded-*; trust it.
        forwarded_allow_ips="*",
        logconfig_dict={
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": "core.web.logs.JsonFormatter"}},
            "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json",
                                    "stream": "ext://sys.stdout"}},
            "root": {"handlers": ["stdout"], "level": settings.log_level},
            "loggers": {
                "gunicorn.error": {"handlers": ["stdout"], "level": settings.log_level, "propagate": False},
                "gunicorn.access": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
            },
        },
    )


def configure(namespace: dict, package: str) -> None:
    """gunicorn's settings for the service ``<package>/app.py`` declares, its app included."""
    from core.declaration import declared

    declaration = declared(package)
    apply(namespace, declaration.settings.from_env(), processes_per_gpu=declaration.processes_per_gpu,
          cpus_per_process=declaration.cpus_per_process)
    namespace["wsgi_app"] = declaration.app_uri


# Loaded as gunicorn's config file: serve the service the launcher named.
if os.environ.get(APP_PACKAGE_ENV):
    configure(globals(), os.environ[APP_PACKAGE_ENV])
