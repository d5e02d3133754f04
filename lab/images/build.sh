#!/usr/bin/env bash
# Build local base images with debootstrap and `docker import` (no registry is
# needed). Cached: an image is rebuilt only when its recipe (this script, its
# package list and setup script, the mirror) changes; the recipe hash is kept
# in the image label `io.modelops.image.recipe`.
#
# usage: lab/images/build.sh [FLAVOUR:SUITE ...]
#   lab:bookworm lab:trixie   systemd + sshd hosts for the lab and molecule
#                             -> modelops-lab:<suite>
#   python:bookworm           base of model images (Python 3.11 + venv)
#                             -> modelops-python:<suite>
# default: lab:bookworm lab:trixie python:bookworm
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
mirror="${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(lab:bookworm lab:trixie python:bookworm)

log() { printf '==> %s\n' "$*" >&2; }

command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed (run scripts/host-engine.sh)" >&2; exit 1; }

for target in "${targets[@]}"; do
  flavour="${target%%:*}"; suite="${target#*:}"
  pkgfile="$here/packages-$flavour.txt"; setup="$here/setup-$flavour.sh"
  [ -f "$pkgfile" ] && [ -f "$setup" ] || { echo "error: unknown image flavour '$flavour'" >&2; exit 1; }
  image="modelops-$flavour:$suite"
  packages="$(grep -v '^#' "$pkgfile" | xargs | tr ' ' ',')"
  recipe="$( (cat "$here/build.sh" "$pkgfile" "$setup"; echo "$mirror $suite") | sha256sum | cut -c1-16)"
  have="$(docker image inspect --format '{{index .Config.Labels "io.modelops.image.recipe"}}' "$image" 2>/dev/null || true)"
  if [ "$have" = "$recipe" ]; then
    log "$image is up to date (recipe $recipe)"
    continue
  fi
  log "Building $image (recipe $recipe) from $mirror"
  root="$(mktemp -d /var/tmp/modelops-rootfs.XXXXXX)"
  trap 'rm -rf "$root" "$root.log"' EXIT
  debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 30 "$root.log" >&2; echo "error: debootstrap $suite failed" >&2; exit 1; }
  cp "$setup" "$root/tmp/setup.sh"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  chroot "$root" /bin/bash /tmp/setup.sh "$mirror" "$suite"
  rm -f "$root/tmp/setup.sh"
  : > "$root/etc/resolv.conf"
  changes=(--change "LABEL io.modelops.image.recipe=$recipe" --change "LABEL io.modelops.image.suite=$suite")
  if [ "$flavour" = lab ]; then
    changes+=(--change 'CMD ["/lib/systemd/systemd"]')
  else
    changes+=(--change 'CMD ["/usr/bin/python3"]' --change 'ENV LANG=C.UTF-8')
  fi
  tar --numeric-owner -C "$root" -c . | docker import "${changes[@]}" - "$image" >/dev/null
  rm -rf "$root" "$root.log"
  trap - EXIT
  log "Built $image"
done
