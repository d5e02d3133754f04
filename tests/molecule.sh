#!/usr/bin/env bash
# Run `molecule test` for the given roles' scenarios one after another in one lane.
#   tests/molecule.sh LANE ROLE|ROLE/SCENARIO...
# A ROLE runs every scenario of roles/<role>/molecule/ (each directory with a
# molecule.yml, in name order); ROLE/SCENARIO runs that one alone.
# LANE ("-" = the default host names, or e.g. "-q2-") keeps concurrent queues'
# hosts and networks apart (see .config/molecule/config.yml). Each scenario's
# log goes to .cache/molecule-logs/<role>.<scenario>.log; a failure prints its
# tail.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
lane="$1"; shift
mkdir -p "$root/.cache/molecule-logs"
runs=()
for arg in "$@"; do
  if [[ "$arg" == */* ]]; then
    [ -f "$root/roles/${arg%%/*}/molecule/${arg#*/}/molecule.yml" ] || { echo "no scenario $arg" >&2; exit 2; }
    runs+=("$arg")
  else
    found=0
    for file in "$root/roles/$arg/molecule"/*/molecule.yml; do
      [ -f "$file" ] || continue
      runs+=("$arg/$(basename "$(dirname "$file")")"); found=1
    done
    [ "$found" -eq 1 ] || { echo "role $arg has no molecule scenario" >&2; exit 2; }
  fi
done
failed=()
for run in "${runs[@]}"; do
  role="${run%%/*}"; scenario="${run#*/}"
  log="$root/.cache/molecule-logs/$role.$scenario.log"
  start=$(date +%s)
  if (cd "$root/roles/$role" && MOLECULE_LANE="$lane" molecule test -s "$scenario") >"$log" 2>&1; then
    echo "==> molecule $role/$scenario: passed in $(( $(date +%s) - start )) s"
  else
    echo "==> molecule $role/$scenario: FAILED after $(( $(date +%s) - start )) s (log: $log)"
    tail -n 80 "$log"
    failed+=("$run")
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "molecule failed: ${failed[*]}"; exit 1; }
