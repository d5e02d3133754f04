#!/usr/bin/env bash
# Converge the lab fleet with playbooks/site.yml twice; the second run must
# report changed=0 on every host (the demo's promise). The second run goes
# through ansible-runner, the engine AWX runs jobs with, and is judged from its
# artifacts (status, rc, the job events' stats): tests/integration/runner_site.py.
# With EE_IMAGE set it runs inside that execution environment (make ee), with the
# image's Ansible and its installed copy of the collection.
set -euo pipefail
inv="${1:-inventories/lab}"
echo "==> site.yml, first run"
start=$SECONDS
ansible-playbook -i "$inv" playbooks/site.yml
echo "==> site.yml, first run: $((SECONDS - start)) s"
echo "==> site.yml, second run (must change nothing), through ansible-runner as AWX runs a job${EE_IMAGE:+, in $EE_IMAGE}"
start=$SECONDS
python3=${PYTHON:-python3}
"$python3" tests/integration/runner_site.py "$inv" --idempotent ${EE_IMAGE:+--container-image "$EE_IMAGE"}
echo "==> site.yml, second run: $((SECONDS - start)) s"
echo "PASS: site.yml is idempotent on the lab fleet"
