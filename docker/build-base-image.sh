#!/usr/bin/env bash
# Builds the base image localhost/debian-python:bookworm from Debian's own packages, for
# machines that reach Debian's mirror but no container registry (CI, the sandbox):
# debootstrap --variant=minbase + python3 (3.11), python3-venv (ensurepip), ca-certificates,
# security updates applied, apt lists/docs/man pages dropped, then `podman import`.
#
#   docker/build-base-image.sh [IMAGE]       (FORCE=1 rebuilds an existing image)
#
# The worker's Dockerfile then builds on it with --build-arg BASE_IMAGE=<IMAGE>; with
# registry access the default python:3.11-slim is used instead.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
image="${1:-localhost/debian-python:bookworm}"
suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
podman="$here/podman.sh"

if [[ "${FORCE:-0}" != 1 ]] && "$podman" image exists "$image"; then
  echo "$image: already built (FORCE=1 to rebuild)"
  exit 0
fi
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install $tool" >&2; exit 1; }
done
[[ $(id -u) -eq 0 ]] || { echo "debootstrap needs root" >&2; exit 1; }

rootfs="$(mktemp -d "${TMPDIR:-/var/tmp}/debian-python.XXXXXX")"
chmod 0755 "$rootfs"  # it becomes the image's "/": mktemp's 0700 would lock non-root users out
cleanup() {
  umount -R "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true
  rm -rf --one-file-system "$rootfs" "$rootfs.log"
}
trap cleanup EXIT

start=$SECONDS
echo "==> debootstrap $suite (minbase + python3) into $rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

echo "==> applying security updates"
cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
SOURCES
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get update && apt-get upgrade -y && apt-get clean' >"$rootfs.log" 2>&1 \
  || { tail -20 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

echo "==> trimming"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/locale/*
find "$rootfs"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +
: >"$rootfs/etc/machine-id"

echo "==> importing as $image"
tar --numeric-owner -C "$rootfs" -c . | "$podman" import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$image" >/dev/null
echo "$image built in $((SECONDS - start))s ($("$podman" image inspect --format '{{.Size}}' "$image") bytes)"
