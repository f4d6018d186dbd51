"""gunicorn config for the CLIP server: ``gunicorn -c server/gunicorn_conf.py 'server.app:create_app()'``."""

from core.gunicorn_conf import apply
from server.settings import ServerSettings

# On a GPU instance, one request-handling process per vCPU, each with its own replica
# (core.gunicorn_conf.default_worker_count); WEB_WORKERS overrides.
apply(globals(), ServerSettings.from_env(), processes_per_gpu=None)
