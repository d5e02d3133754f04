#!/usr/bin/env bash
# Use the collection as users get it: the copy `make installed` put into an
# empty collections path from the tarball, and only that copy. The checkout's
# own link tree (.cache/collections) is off the path; community.docker and the
# other dependencies come from the ansible package, which Ansible finds on
# Python's path by itself.
#   bash tests/installed.sh docs COLLECTIONS_ROOT TARBALL
#       ansible-doc for every module and role, a syntax check of every playbook
#       by its FQCN, then galaxy-importer on the tarball (what Galaxy and
#       Automation Hub run on upload); any warning it prints fails.
#   bash tests/installed.sh lab COLLECTIONS_ROOT [INVENTORY]
#       real playbooks of ours, by FQCN, against the converged lab fleet: they
#       must succeed and change nothing (the fleet already runs the inventory's
#       versions), so a role or plugin that needs a file the tarball lacks, or
#       a path outside the collection, fails here.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mode="${1:?usage: $0 docs|lab COLLECTIONS_ROOT [TARBALL|INVENTORY]}"
coll_root="$(cd "${2:?COLLECTIONS_ROOT (the -p path of the install)}" && pwd)"
installed="$coll_root/ansible_collections/modelops/serving"
export ANSIBLE_COLLECTIONS_PATH="$coll_root"

# modelops.serving must resolve to the installed copy and to nothing else.
found="$(ansible-galaxy collection list modelops.serving --format json)"
python3 - "$coll_root/ansible_collections" "$found" <<'EOF'
import json, sys
where = [path for path, colls in json.loads(sys.argv[2]).items() if "modelops.serving" in colls]
if where != [sys.argv[1]]:
    sys.exit("modelops.serving must come from %s only, found it in %s" % (sys.argv[1], where))
print("modelops.serving resolves to %s only" % where[0])
EOF

case "$mode" in
docs)
  tarball="${3:?TARBALL}"
  python3 - "$installed" <<'EOF'
import json, os, subprocess, sys
coll = sys.argv[1]
for kind, names in (("module", [f[:-3] for f in os.listdir(coll + "/plugins/modules") if f.endswith(".py")]),
                    ("role", os.listdir(coll + "/roles"))):
    listed = json.loads(subprocess.check_output(["ansible-doc", "-t", kind, "-l", "modelops.serving", "--json"]))
    listed = sorted(name.rsplit(".", 1)[-1] for name in listed)
    if listed != sorted(names):
        sys.exit("ansible-doc lists the %ss %s, the installed copy has %s" % (kind, listed, sorted(names)))
    for name in sorted(names):
        subprocess.run(["ansible-doc", "-t", kind, "modelops.serving." + name],
                       check=True, stdout=subprocess.DEVNULL)
    print("ansible-doc: %d %ss render (%s)" % (len(names), kind, ", ".join(sorted(names))))
EOF
  for pb in "$installed"/playbooks/*.yml; do
    ansible-playbook --syntax-check "modelops.serving.$(basename "$pb" .yml)" >/dev/null
  done
  echo "syntax check: $(ls "$installed"/playbooks/*.yml | wc -l) playbooks by FQCN"
  # galaxy-importer writes importer_result.json into the current directory.
  out="$root/tests/output/galaxy-importer"
  rm -rf "$out" && mkdir -p "$out"
  (cd "$out" && GALAXY_IMPORTER_CONFIG="$root/tests/galaxy-importer.cfg" \
    python3 -m galaxy_importer.main "$tarball" | tee importer.log)
  if grep -E '^(WARNING|ERROR)' "$out/importer.log"; then
    echo "FAIL: galaxy-importer had the complaints above" >&2
    exit 1
  fi
  ;;
lab)
  inv="${3:-inventories/lab}"
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  cd "$root"
  for pb in package_models rolling_update; do
    echo "==> modelops.serving.$pb from the installed copy (must change nothing)"
    ansible-playbook -i "$inv" "modelops.serving.$pb" | tee "$log"
    if grep -E '^[^ ]+ +: ok=[0-9]+ +changed=[1-9]' "$log"; then
      echo "FAIL: modelops.serving.$pb from the installed copy changed something (above)" >&2
      exit 1
    fi
  done
  echo "PASS: the installed collection alone runs our playbooks against the lab, changing nothing"
  ;;
*)
  echo "unknown mode $mode (docs or lab)" >&2
  exit 2
  ;;
esac
