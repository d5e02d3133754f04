#!/usr/bin/env bash
# Converge the lab fleet with playbooks/site.yml twice; the second run must
# report changed=0 on every host (the demo's promise).
set -euo pipefail
inv="${1:-inventories/lab}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "==> site.yml, first run"
start=$SECONDS
ansible-playbook -i "$inv" playbooks/site.yml
echo "==> site.yml, first run: $((SECONDS - start)) s"
echo "==> site.yml, second run (must change nothing)"
start=$SECONDS
ansible-playbook -i "$inv" playbooks/site.yml | tee "$log"
echo "==> site.yml, second run: $((SECONDS - start)) s"
if grep -E '^[^ ]+ +: ok=[0-9]+ +changed=[1-9]' "$log"; then
  echo "FAIL: the second run of site.yml changed something (above)" >&2
  exit 1
fi
echo "PASS: site.yml is idempotent on the lab fleet"
