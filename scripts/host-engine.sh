#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine (the controller).
# Installs Debian's docker.io and starts dockerd in the background when no
# engine answers and systemd is not PID 1. Idempotent: does nothing when an
# engine already answers.
set -euo pipefail

log() { printf '==> %s\n' "$*" >&2; }

engine_answers() {
  docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

if engine_answers; then
  log "Docker engine answers: $(docker version --format '{{.Server.Version}}')"
  exit 0
fi

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
if ((${#need_pkgs[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: packages ${need_pkgs[*]} are missing and this is not root" >&2
    exit 1
  fi
  log "Installing ${need_pkgs[*]} from the distribution"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" iptables ca-certificates >/dev/null
fi

if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
  log "Starting docker.service"
  systemctl enable --now docker
else
  log "Starting dockerd in the background (no systemd on this machine)"
  mkdir -p /var/log
  nohup dockerd >/var/log/dockerd.log 2>&1 &
fi

for _ in $(seq 1 60); do
  if engine_answers; then
    log "Docker engine answers: $(docker version --format '{{.Server.Version}}')"
    exit 0
  fi
  sleep 1
done
echo "error: the Docker engine did not answer within 60 s; see /var/log/dockerd.log" >&2
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1
