#!/usr/bin/env bash
# Regenerate the hash-locked requirement files the images install with pip --require-hashes:
#   requirements/server.lock  <- requirements/server.txt   (Dockerfile.cloudrun, CLIP server)
#   requirements/worker.lock  <- requirements/worker.txt   (Dockerfile.slim, Whisper worker)
#
#   scripts/lock-requirements.sh             both      (make lock)
#   scripts/lock-requirements.sh worker      one
#
# pip-tools' pip-compile --generate-hashes against PyPI only (this machine's local wheel mirrors
# are ignored: the image build downloads from PyPI, so the hashes must be PyPI's), with the
# images' Python (3.11). The torch family (torch, torchvision, torchaudio, triton, nvidia-*) comes
# from the base image: it is resolved at the base's versions (requirements/image-torch.txt) and
# then dropped from the lock, the same family the Dockerfiles freeze with PIP_CONSTRAINT.
# Run it after any change to requirements/*.txt; tests/shipping/test_supply_chain.py fails until you do.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PIP_TOOLS_VERSION=7.6.2
PYTHON=${PYTHON:-python3}
tools=${PIP_TOOLS_VENV:-.cache/pip-tools-$PIP_TOOLS_VERSION}

"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "error: $PYTHON is not Python 3.11, the images' Python (set PYTHON=python3.11)" >&2; exit 2; }
if [[ ! -x $tools/bin/pip-compile ]]; then
  echo "installing pip-tools $PIP_TOOLS_VERSION into $tools" >&2
  "$PYTHON" -m venv "$tools"
  "$tools/bin/pip" install --quiet "pip-tools==$PIP_TOOLS_VERSION"
fi

apps=("$@")
[[ ${#apps[@]} -gt 0 ]] || apps=(server worker)
for app in "${apps[@]}"; do
  [[ -f requirements/$app.txt ]] || { echo "error: no requirements/$app.txt" >&2; exit 2; }
  echo "locking requirements/$app.txt -> requirements/$app.lock (a few minutes: every wheel's hash)" >&2
  env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
    CUSTOM_COMPILE_COMMAND="scripts/lock-requirements.sh" \
    "$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
    --no-emit-index-url --no-emit-find-links --index-url=https://pypi.org/simple \
    --constraint=requirements/image-torch.txt \
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
