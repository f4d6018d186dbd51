#!/usr/bin/env bash
# `make run-images`: the built images as `make run` starts the services: every service of
# services.toml on its port (CLIP :5001, Whisper :8080, ...), each image's own entrypoint and
# command, stopped together on Ctrl-C or SIGTERM. IMAGE:local by default; PREFIX_IMAGE and
# PREFIX_PORT (CLIP_IMAGE, WORKER_PORT, ...) override one service's image and port.
# docker run where a Docker engine answers; otherwise buildah run (chroot isolation, the host's
# network: a service inside answers on localhost). Build them first: make images.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pids=() containers=()
if docker info >/dev/null 2>&1; then
  start() {  # port image
    docker run --rm --init -e "PORT=$1" -p "$1:$1" "$2" & pids+=($!)
  }
else
  # shellcheck source=scripts/buildah-env.sh
  source scripts/buildah-env.sh  # the cwd is the repository root (cd above)
  start() {  # port image: a working container from the image, running the image's CMD
    local ctr cmd
    ctr=$(buildah from --pull-never "$2")
    containers+=("$ctr")
    mapfile -t cmd < <(buildah inspect --type image --format \
      '{{range .Docker.Config.Entrypoint}}{{println .}}{{end}}{{range .Docker.Config.Cmd}}{{println .}}{{end}}' "$2")
    # setsid: its own process group, where stop() finds gunicorn's master.
    setsid buildah run --env "PORT=$1" "$ctr" -- "${cmd[@]}" & pids+=($!)
  }
fi

# SIGTERM where Cloud Run sends it: the container's PID 1, gunicorn's master, which drains its
# workers. buildah run SIGKILLs its child on SIGTERM, and a signal to the whole group would reach
# the workers directly and cut their requests.
master_of() {  # process group -> its gunicorn master (the gunicorn whose parent is not one)
  ps -o pid=,ppid=,args= -g "$1" | awk '/gunicorn/ {g[$1] = $2} END {for (p in g) if (!(g[p] in g)) print p}'
}
stop() {
  trap - EXIT INT TERM
  local pid master
  for pid in "${pids[@]}"; do
    master=$(master_of "$pid" 2>/dev/null || true)
    kill -TERM "${master:-$pid}" 2>/dev/null || true
  done
  wait || true
  for ctr in "${containers[@]}"; do buildah rm "$ctr" >/dev/null 2>&1 || true; done
}
trap stop EXIT INT TERM

table() { "${PYTHON:-python3}" scripts/services.py "$@"; }
while IFS= read -r name; do
  prefix=$(table get "$name" env_prefix)
  image_var=${prefix}_IMAGE port_var=${prefix}_PORT
  image=${!image_var:-$(table get "$name" image):local}
  port=${!port_var:-$(table get "$name" port)}
  start "$port" "$image"
  echo "$name ($image): http://localhost:$port"
done < <(table names)
wait -n  # when one exits, stop the others
