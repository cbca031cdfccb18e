#!/usr/bin/env bash
# podman as this project builds and runs its image where there is no Docker engine and no
# systemd (CI, the development sandbox): runs as root with runc, the vfs storage driver
# (no overlayfs or fuse needed), cgroupfs and a file events log (docker/containers.conf).
# Its image store is kept apart from any other podman use on the machine, so the cached
# base image survives between runs and never clashes with another storage driver.
#
#   docker/podman.sh build --network host -t picture-worker .
#   docker/podman.sh run --rm --network host --env-file worker.env picture-worker
#
# With a real Docker engine none of this is needed: `docker build -t picture-worker .`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
exec podman \
  --runtime runc \
  --storage-driver vfs \
  --root "${PODMAN_ROOT:-/var/lib/containers/picture-worker}" \
  --runroot "${PODMAN_RUNROOT:-/run/containers/picture-worker}" \
  "$@"
