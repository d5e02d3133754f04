#!/usr/bin/env bash
# Converge the lab fleet with playbooks/site.yml twice; the second run must
# report changed=0 on every host (the demo's promise). The second run goes
# through ansible-runner, the engine AWX runs jobs with, and is judged from its
# artifacts (status, rc, the job events' stats): tests/integration/runner_site.py.
set -euo pipefail
inv="${1:-inventories/lab}"
echo "==> site.yml, first run"
start=$SECONDS
ansible-playbook -i "$inv" playbooks/site.yml
echo "==> site.yml, first run: $((SECONDS - start)) s"
echo "==> site.yml, second run (must change nothing), through ansible-runner as AWX runs a job"
start=$SECONDS
python3=${PYTHON:-python3}
"$python3" tests/integration/runner_site.py "$inv" --idempotent
echo "==> site.yml, second run: $((SECONDS - start)) s"
echo "PASS: site.yml is idempotent on the lab fleet"
