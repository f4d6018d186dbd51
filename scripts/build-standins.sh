#!/usr/bin/env bash
# Local stand-ins for the two base images, for a machine that cannot pull them (no registry):
#   python:3.11-slim                                  <- Debian bookworm (debootstrap) + its python3
#   pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime     <- that + torch 2.7.1/torchvision 0.22.1 from PyPI
# Built from Debian packages and PyPI only, stored under the names the Dockerfiles use, and
# labelled org.opencontainers.image.description=STAND-IN and template.stand-in=true:
# deploy-cloudrun.sh refuses to ship them, and nothing here pushes. How faithful they are:
# docs/deploy.md, "Build and run the images locally". Needs root, buildah and debootstrap.
#
#   scripts/build-standins.sh          build the missing ones (scripts/build-images.sh calls it)
#   scripts/build-standins.sh --force  rebuild both
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SLIM=docker.io/library/python:3.11-slim
CUDA=docker.io/pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
# The machine's CA bundle: pip inside a build reaches PyPI through this machine's TLS setup only.
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# shellcheck source=scripts/buildah-env.sh
source scripts/buildah-env.sh  # the cwd is the repository root (cd above)
force=0; [[ ${1:-} == --force ]] && force=1

have() { buildah inspect --type image "$1" >/dev/null 2>&1; }
label=(--label template.stand-in=true
       --label "org.opencontainers.image.description=STAND-IN built by scripts/build-standins.sh; never push")

if (( force )) || ! have "$SLIM"; then
  echo "==> stand-in $SLIM: debootstrap bookworm + python3 (about a minute)" >&2
  root=$(mktemp -d /var/tmp/standin-root.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$MIRROR" >/dev/null
  # The real image's Python is /usr/local/bin/python with pip able to install system-wide; a venv
  # at /usr/local gives the same commands (python, pip) on PATH without Debian's PEP 668 guard.
  # pip is the one python3-venv bundles (23.0.1); the real image's is newer.
  chroot "$root" python3 -m venv /usr/local
  cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  tar -C "$root" -cf - . | tar -C "$mnt" -xf -
  buildah umount "$ctr" >/dev/null
  buildah config "${label[@]}" \
    --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --env REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    --cmd python3 "$ctr"
  buildah commit --rm "$ctr" "$SLIM" >/dev/null
  rm -rf "$root"; trap - EXIT
fi

if (( force )) || ! have "$CUDA"; then
  echo "==> stand-in $CUDA: $SLIM + torch 2.7.1 (CUDA 12.6 wheels) from PyPI (2-3 minutes)" >&2
  ctr=$(buildah from --pull-never "$SLIM")
  buildah run "$ctr" -- pip install --no-cache-dir --index-url https://pypi.org/simple \
    torch==2.7.1 torchvision==0.22.1 >/dev/null
  buildah run "$ctr" -- python -c "import torch; assert torch.version.cuda.startswith('12.'), torch.version.cuda"
  buildah config "${label[@]}" "$ctr"
  buildah commit --rm "$ctr" "$CUDA" >/dev/null
fi
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -E 'python:3.11-slim|pytorch/pytorch' >&2
