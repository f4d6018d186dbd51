"""`make samples`: photo.jpg (a red circle the demo CLIP model knows) and meeting.m4a (synthetic speech).

The curl examples of the README and docs/ use these two files; any JPEG and any recording work the same way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.demo.shapes import draw_shape  # noqa: E402

SPEECH = ("Good morning everyone. Please send the quarterly report to Maria before Friday. "
          "The server migration happens on Saturday night.")


def main(target: Path) -> None:
    """Write photo.jpg and meeting.m4a into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    draw_shape("red", "circle", np.random.default_rng(7), size=(640, 480)).save(target / "photo.jpg", quality=92)
    if not (shutil.which("espeak-ng") and shutil.which("ffmpeg")):
        sys.exit("meeting.m4a needs espeak-ng and ffmpeg: run `make setup`")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "meeting.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), SPEECH], check=True)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "aac",
                        str(target / "meeting.m4a")], check=True)
    print(f"wrote {target / 'photo.jpg'} and {target / 'meeting.m4a'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
