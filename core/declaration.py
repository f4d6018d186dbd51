"""One declaration of a service: what is its own. The core builds everything else from it.

An app states its name, settings class, backend factory, service object, routes, input units,
event handler and job; ``core.web.service_app.create_app`` builds the Flask app (health, metrics,
OpenAPI, callback_url jobs, events), ``core.launcher.main`` the ``python -m <package>`` launcher
and its gunicorn config (core/gunicorn_conf.py), ``core.from_storage.job_entry.main`` the Cloud Run
Jobs entry. docs/add-a-model.md walks through declaring a new one.

Nothing here imports Flask or a model library: routes are named by module (each has a ``bp``
Blueprint) and imported only when the app is built, so a batch job never loads the web layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.settings import CoreSettings

# (service, raw job options) -> the options every input of a job is run with; raises 4xx.
PrepareOptions = Callable[[Any, Mapping[str, list[str]]], Any]
# (service, input bytes, input name, prepared options) -> the input's result.
RunInput = Callable[[Any, bytes, str, Any], Any]


@dataclass(frozen=True)
class Option:
    """A flag of ``python -m <package>`` that sets one environment variable (a setting)."""

    flag: str
    env: str
    help: str


@dataclass(frozen=True)
class JobDeclaration:
    """How ``python -m <package>.job`` runs one input of a folder (Cloud Run Jobs).

    ``results``: ``"jsonl"`` writes one JSONL shard per task, a ``{"path", ...result}`` line per
    input (``run`` returns a dict); ``"files"`` writes files per input (``run`` returns
    ``{suffix: (bytes, content type)}``, the ``.json`` last).
    """

    suffixes: tuple[str, ...]
    unit: str  # what the progress lines count ("images", "files")
    run: RunInput
    results: str = "jsonl"
    # --option NAME=VALUE pairs -> options, validated before any input is read; None = no options.
    prepare: PrepareOptions | None = None
    # MAX_BATCH_SIZE when the setting is auto: a job has no latency to protect.
    batch_size: int | None = None
    max_input_bytes: int | None = None  # None: the service's MAX_REQUEST_MB


@dataclass(frozen=True)
class Declaration:
    """Everything that is one service's own; see the module docstring for what the core adds."""

    name: str  # short name: the runner's thread, logs, event failure records ("clip")
    package: str  # the Python package: python -m <package>, <package>.bake, <package>.job
    service_name: str  # /health's "service" and /v1/models' "owned_by" ("clip-server")
    title: str  # OpenAPI title
    description: str  # OpenAPI description
    settings: type[CoreSettings]
    make_backend: Callable[[Any], Any]  # settings -> backend (core.model.runner.Backend)
    make_service: Callable[..., Any]  # (runner, settings, memory_budget) -> the service object
    routes: tuple[str, ...]  # modules with a ``bp`` Blueprint, registered in this order
    units: tuple[str, ...]  # input units counted in /metrics (core/web/metrics.py UNITS, or new ones)
    events: Callable[[Any], Any] | None = None  # service -> EventHandler for /events/*; None = no events
    job: JobDeclaration | None = None
    # Request-handling processes per GPU when WEB_WORKERS is unset; None = one per vCPU
    # (core/gunicorn_conf.default_worker_count). A large model keeps 1.
    processes_per_gpu: int | None = 1
    # Without a GPU: one process per this many vCPUs, each model with that many threads (a small model
    # keeps every core in its matrix products this way); None = one process (core/capacity.py).
    cpus_per_process: int | None = None
    options: tuple[Option, ...] = ()  # python -m <package> flags besides --port
    # Extra /health detail fields (JSON Schema properties) this service publishes.
    health_properties: Mapping[str, dict] = field(default_factory=dict)

    @property
    def app_uri(self) -> str:
        """gunicorn's WSGI entry for this service."""
        return f"{self.package}.app:create_app()"

    def create_app(self, settings: CoreSettings | None = None, backend=None):
        """The Flask app (see core/web/service_app.py); tests pass settings and a backend."""
        from core.web.service_app import create_app  # the web layer only when an app is built

        return create_app(self, settings, backend)


def declared(package: str) -> Declaration:
    """The Declaration that ``<package>/app.py`` makes (one per app)."""
    import importlib

    module = importlib.import_module(f"{package}.app")
    found = [value for value in vars(module).values() if isinstance(value, Declaration)]
    if len(found) != 1:
        raise LookupError(f"{package}/app.py must declare exactly one core.declaration.Declaration, found {len(found)}")
    return found[0]
