"""gunicorn config for the worker: ``gunicorn -c worker/gunicorn_conf.py 'worker.app:create_app()'``."""

from core.gunicorn_conf import apply
from worker.settings import WorkerSettings

apply(globals(), WorkerSettings.from_env())
