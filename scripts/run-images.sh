#!/usr/bin/env bash
# `make run-images`: the built images as `make run` starts the services: CLIP server on :5001,
# Whisper worker on :8080, each image's own CMD, stopped together on Ctrl-C or SIGTERM.
# docker run where a Docker engine answers; otherwise buildah run (chroot isolation, the host's
# network: a service inside answers on localhost). Build them first: make images.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
clip=${CLIP_IMAGE:-clip-server:local}
worker=${WORKER_IMAGE:-whisper-worker:local}
clip_port=${CLIP_PORT:-5001}
worker_port=${WORKER_PORT:-8080}

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
    mapfile -t cmd < <(buildah inspect --type image --format '{{range .Docker.Config.Cmd}}{{println .}}{{end}}' "$2")
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

start "$clip_port" "$clip"
start "$worker_port" "$worker"
echo "CLIP server ($clip): http://localhost:$clip_port  Whisper worker ($worker): http://localhost:$worker_port"
wait -n  # when either exits, stop the other
