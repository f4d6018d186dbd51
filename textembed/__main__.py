"""``python -m textembed --help``: start the service (the launcher is core/launcher.py)."""

from core.launcher import main
from textembed.app import TEXTEMBED

if __name__ == "__main__":
    main(TEXTEMBED)
