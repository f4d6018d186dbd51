#!/usr/bin/env bash
# Resolve every base image in requirements/base-images.lock to its current digest and write it back
# as image:tag@sha256:DIGEST (the digest of the tag's manifest list, so every platform is pinned).
#
#   scripts/pin-base-images.sh            (make pin-images)
#
# Uses the first of: crane (crane digest), docker buildx (imagetools inspect), curl (the Docker Hub
# registry API, anonymous; Docker Hub images only). Review the diff and commit it: the next
# ./deploy-cloudrun.sh build then uses exactly these bytes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOCK=${BASE_IMAGES_LOCK:-requirements/base-images.lock}

digest_of() {
  local ref=$1 out
  if command -v crane >/dev/null 2>&1; then
    crane digest "$ref"
  elif docker buildx version >/dev/null 2>&1; then
    out=$(docker buildx imagetools inspect "$ref" --format '{{json .Manifest}}')
    printf '%s\n' "$out" | sed -n 's/.*"digest": *"\(sha256:[0-9a-f]*\)".*/\1/p' | head -n 1
  elif command -v curl >/dev/null 2>&1; then
    local repo=${ref%:*} tag=${ref##*:} token
    [[ $repo == */* ]] || repo="library/$repo"
    token=$(curl -fsSL "https://auth.docker.io/token?service=registry.docker.io&scope=repository:$repo:pull" \
      | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
    curl -fsSI -H "Authorization: Bearer $token" \
      -H "Accept: application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json" \
      "https://registry-1.docker.io/v2/$repo/manifests/$tag" \
      | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *\(sha256:[0-9a-f]*\)$/\1/p'
  else
    echo "error: need crane, docker buildx or curl to resolve $ref" >&2
    return 2
  fi
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
while IFS= read -r line || [[ -n $line ]]; do
  if [[ $line =~ ^([A-Z_]+)=([^@[:space:]]+)(@sha256:[0-9a-f]+)?$ ]]; then
    name=${BASH_REMATCH[1]} ref=${BASH_REMATCH[2]}
    digest=$(digest_of "$ref")
    [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "error: no digest for $ref (got '$digest')" >&2; exit 1; }
    echo "$name: $ref@$digest" >&2
    printf '%s=%s@%s\n' "$name" "$ref" "$digest" >> "$tmp"
  else
    printf '%s\n' "$line" >> "$tmp"
  fi
done < "$LOCK"
cat "$tmp" > "$LOCK"
