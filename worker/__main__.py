"""``python -m worker --help``: start the service (the launcher is core/launcher.py)."""

from core.launcher import main
from worker.app import WHISPER

if __name__ == "__main__":
    main(WHISPER)
