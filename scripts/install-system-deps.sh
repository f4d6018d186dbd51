#!/usr/bin/env bash
# Debian packages the tests and the local run need: espeak-ng (speech for the Whisper tests),
# ffmpeg (transcoding test audio), shellcheck (linting the shell scripts), redis-server (the shared
# rate-limit storage test), imagemagick (the downscale recipe of docs/api.md). Idempotent.
set -euo pipefail

packages=()
command -v espeak-ng >/dev/null 2>&1 || packages+=(espeak-ng)
command -v ffmpeg >/dev/null 2>&1 || packages+=(ffmpeg)
command -v shellcheck >/dev/null 2>&1 || packages+=(shellcheck)
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
command -v jq >/dev/null 2>&1 || packages+=(jq)  # the callback_url example (README, docs/async.md) reads status_url
command -v node >/dev/null 2>&1 || packages+=(nodejs)  # the TypeScript client's tests (node --test)
# The downscale-before-upload recipe of docs/api.md (convert). Asked of dpkg, not PATH: some machines put a
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
# Another apt (unattended-upgrades on a fresh VM, a second `make setup`) may hold the dpkg lock:
# apt waits up to APT_LOCK_TIMEOUT_S for it instead of failing at once, and if it is still held
# we say which processes hold it rather than leave apt's bare "Could not get lock".
APT_LOCK_TIMEOUT_S=${APT_LOCK_TIMEOUT_S:-120}
LOCKS="/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock"

lock_holders() {
  local fd target pid
  for fd in /proc/[0-9]*/fd/*; do  # processes with a lock file open (all of them as root)
    target=$(readlink "$fd" 2>/dev/null) || continue
    case " $LOCKS " in
      *" $target "*)
        pid=${fd#/proc/}
        pid=${pid%%/*}
        printf '  pid %s: %s(has %s open)\n' "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" "$target" ;;
    esac
  done
  # Without root the file descriptors of root's processes are hidden: name the usual suspects.
  pgrep -a -x 'apt|apt-get|aptitude|dpkg|unattended-upgr|packagekitd' 2>/dev/null | sed 's/^/  pid /' || true
}

apt() {
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT_S" "$@"; then
    local holders
    holders=$(lock_holders | sort -u)
    echo "error: apt-get $1 failed (it waits up to APT_LOCK_TIMEOUT_S=$APT_LOCK_TIMEOUT_S s for the package lock)." >&2
    if [ -n "$holders" ]; then
      echo "The package manager lock is held by:" >&2
      echo "$holders" >&2
      echo "Let it finish (on a fresh machine it is often unattended-upgrades), then rerun make setup." >&2
    fi
    exit 1
  fi
}

echo "installing ${packages[*]}"
apt update -qq
apt install -y -qq --no-install-recommends "${packages[@]}"
