"""``python -m server --help``: start the service (the launcher is core/launcher.py)."""

from core.launcher import main
from server.app import CLIP

if __name__ == "__main__":
    main(CLIP)
