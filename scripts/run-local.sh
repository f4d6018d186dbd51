#!/usr/bin/env bash
# `make run`: the CLIP server on :5001 and the Whisper worker on :8080, stopped together.
set -euo pipefail
python=${PYTHON:-.venv/bin/python}

pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop EXIT INT TERM

PORT=${CLIP_PORT:-5001} "$python" -m server & pids+=($!)
PORT=${WORKER_PORT:-8080} "$python" -m worker & pids+=($!)
echo "CLIP server: http://localhost:${CLIP_PORT:-5001}  Whisper worker: http://localhost:${WORKER_PORT:-8080}"
wait -n  # when either exits, stop the other
