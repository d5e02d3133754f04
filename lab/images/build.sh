#!/usr/bin/env bash
# Build the lab's base images (systemd, python3, sshd) with debootstrap and
# `docker import`. Cached: an image is rebuilt only when its recipe (this
# script, the package list, the mirror) changes; the recipe hash is stored in
# the image label `io.modelops.lab.recipe`.
#
# usage: lab/images/build.sh [bookworm|trixie ...]   (default: both)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
mirror="${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
prefix="${LAB_IMAGE_PREFIX:-modelops-lab}"
packages="$(grep -v '^#' "$here/packages.txt" | xargs | tr ' ' ',')"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)

log() { printf '==> %s\n' "$*" >&2; }

command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed (run scripts/host-engine.sh)" >&2; exit 1; }
# trixie needs a debootstrap that knows it; bookworm's does (symlink to sid script).

for suite in "${suites[@]}"; do
  image="$prefix:$suite"
  recipe="$( (cat "$here/build.sh" "$here/packages.txt" "$here/setup-rootfs.sh"; echo "$mirror $suite") | sha256sum | cut -c1-16)"
  have="$(docker image inspect --format '{{index .Config.Labels "io.modelops.lab.recipe"}}' "$image" 2>/dev/null || true)"
  if [ "$have" = "$recipe" ]; then
    log "$image is up to date (recipe $recipe)"
    continue
  fi
  log "Building $image (recipe $recipe) from $mirror"
  root="$(mktemp -d /var/tmp/modelops-lab-rootfs.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 30 "$root.log" >&2; echo "error: debootstrap $suite failed" >&2; exit 1; }
  rm -f "$root.log"
  cp "$here/setup-rootfs.sh" "$root/tmp/setup-rootfs.sh"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  chroot "$root" /bin/bash /tmp/setup-rootfs.sh "$mirror" "$suite"
  rm -f "$root/tmp/setup-rootfs.sh"
  tar --numeric-owner -C "$root" -c . | docker import \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change "LABEL io.modelops.lab.recipe=$recipe" \
    --change "LABEL io.modelops.lab.suite=$suite" \
    - "$image" >/dev/null
  rm -rf "$root"
  trap - EXIT
  log "Built $image"
done
