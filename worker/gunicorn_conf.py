"""gunicorn config for the worker: ``gunicorn -c worker/gunicorn_conf.py 'worker.app:create_app()'``."""

from core.gunicorn_conf import apply
from worker.settings import WorkerSettings

# One process per GPU: a Whisper replica is large (3 GB for large-v3 in fp16) and the worker's
# CPU side per 30 s window is a few percent of the GPU's time for it (docs/performance.md, "Feeding the GPU").
apply(globals(), WorkerSettings.from_env(), processes_per_gpu=1)
