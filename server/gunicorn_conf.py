"""gunicorn config for the CLIP server: ``gunicorn -c server/gunicorn_conf.py 'server.app:create_app()'``."""

from core.gunicorn_conf import apply
from server.settings import ServerSettings

apply(globals(), ServerSettings.from_env())
