#!/usr/bin/env bash
# Debian packages the tests and the local run need: espeak-ng (speech for the Whisper tests),
# ffmpeg (transcoding test audio), shellcheck (linting the shell scripts), redis-server (the shared
# rate-limit storage test), imagemagick (the README's downscale recipe). Idempotent.
set -euo pipefail

packages=()
command -v espeak-ng >/dev/null 2>&1 || packages+=(espeak-ng)
command -v ffmpeg >/dev/null 2>&1 || packages+=(ffmpeg)
command -v shellcheck >/dev/null 2>&1 || packages+=(shellcheck)
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
command -v jq >/dev/null 2>&1 || packages+=(jq)  # the README's callback_url example reads status_url
command -v node >/dev/null 2>&1 || packages+=(nodejs)  # the TypeScript client's tests (node --test)
# The README's downscale-before-upload recipe (convert). Asked of dpkg, not PATH: some machines put a
# stand-in `convert` on PATH that is not ImageMagick.
dpkg -s imagemagick >/dev/null 2>&1 || packages+=(imagemagick)
[ ${#packages[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: ${packages[*]} -- install them with your package manager" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "missing: ${packages[*]} (need root or sudo)" >&2; exit 1; }
  sudo=(sudo)
fi
echo "installing ${packages[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"
