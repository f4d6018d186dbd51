# shellcheck shell=bash
# Sourced by the image scripts (build-images.sh, build-standins.sh, run-images.sh) so they all read
# one image store: buildah keeps each storage driver's images apart, and a script on another
# driver would not see the images the others built. overlay, not vfs: vfs copies the whole root
# filesystem for every cached layer. chroot isolation: no cgroups or user namespaces needed.
# bench/containers.py and deploy-cloudrun.sh's stand-in check use the same defaults.
export STORAGE_DRIVER=${STORAGE_DRIVER:-overlay}
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
