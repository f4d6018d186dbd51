#!/usr/bin/env bash
# `make run`: every service of services.toml on its port (CLIP server :5001, Whisper worker :8080,
# ...), stopped together, each default model baked offline into models/ first. PREFIX_PORT
# (CLIP_PORT, WORKER_PORT, ...) moves one.
set -euo pipefail
python=${PYTHON:-.venv/bin/python}

pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop EXIT INT TERM

table() { "$python" "$(dirname "${BASH_SOURCE[0]}")/services.py" "$@"; }
while IFS= read -r name; do
  port_var=$(table get "$name" env_prefix)_PORT
  port=${!port_var:-$(table get "$name" port)}
  package=$(table get "$name" package)
  "$python" -m "$package.bake" >/dev/null  # the default model into models/ (offline, a second or two)
  PORT=$port "$python" -m "$package" & pids+=($!)
  echo "$name: http://localhost:$port"
done < <(table names)
wait -n  # when one exits, stop the others
