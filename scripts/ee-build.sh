#!/usr/bin/env bash
# Build the execution environment image from execution-environment.yml, offline.
#   scripts/ee-build.sh [PYTHON [TAG]]     (make ee; the suite's own: make test-ee)
# 1. The wheelhouse: every Python package the image installs (ee/requirements.txt,
#    the ansible-core and ansible-runner pins of execution-environment.yml, and
#    what ansible-builder's own steps install), downloaded on the controller by
#    `pip download`, where the package index is reachable.
# 2. ansible-builder build with Docker: its build context takes the collection
#    tarball (make build) and that wheelhouse; the build fetches no Python package
#    and no collection from anywhere.
# The image is tagged TAG, by default as execution-environment.yml's options.tags says.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-.venv/bin/python}"
bin="$(dirname "$py")"
wheels=.cache/ee-wheels
context=.cache/ee-context

read -r core runner tag tarball < <("$py" - <<'PY'
import yaml
ee = yaml.safe_load(open("execution-environment.yml"))
deps = ee["dependencies"]
print(deps["ansible_core"]["package_pip"], deps["ansible_runner"]["package_pip"], ee["options"]["tags"][0],
      ee["additional_build_files"][0]["src"])
PY
)
tag="${2:-$tag}"
[ -f "$tarball" ] || { echo "error: $tarball is missing: run make build first" >&2; exit 1; }

echo "==> Filling the execution environment's wheelhouse ($wheels)"
mkdir -p "$wheels"
# bindep, pyyaml and packaging: ansible-builder's builder stage; dumb-init: its final stage.
"$py" -m pip download -q --disable-pip-version-check -d "$wheels" -r ee/requirements.txt \
  "$core" "$runner" bindep pyyaml packaging 'dumb-init==1.2.5' 2>&1 | grep -v '^WARNING: Location' || true
# A package the download could not get fails the build below, naming it.

echo "==> ansible-builder build -t $tag"
rm -rf "$context"
start=$SECONDS
"$bin/ansible-builder" build -f execution-environment.yml -c "$context" --container-runtime docker \
  -t "$tag" -v 1
echo "==> Built $tag in $((SECONDS - start)) s: $(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
