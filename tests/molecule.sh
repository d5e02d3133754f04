#!/usr/bin/env bash
# Run `molecule test` for the given roles one after another in one lane.
#   tests/molecule.sh LANE ROLE...
# LANE ("-" = the default host names, or e.g. "-q2-") keeps concurrent queues'
# hosts and networks apart (see .config/molecule/config.yml). Each role's log
# goes to .cache/molecule-logs/<role>.log; a failure prints its tail.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
lane="$1"; shift
mkdir -p "$root/.cache/molecule-logs"
failed=()
for role in "$@"; do
  log="$root/.cache/molecule-logs/$role.log"
  start=$(date +%s)
  if (cd "$root/roles/$role" && MOLECULE_LANE="$lane" molecule test) >"$log" 2>&1; then
    echo "==> molecule $role: passed in $(( $(date +%s) - start )) s"
  else
    echo "==> molecule $role: FAILED after $(( $(date +%s) - start )) s (log: $log)"
    tail -n 80 "$log"
    failed+=("$role")
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "molecule failed: ${failed[*]}"; exit 1; }
