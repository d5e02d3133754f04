#!/usr/bin/env bash
# Run `ansible-test sanity` on the collection, from a temporary
# ansible_collections/modelops/serving tree holding exactly the files git
# would ship (tracked and untracked-but-not-ignored).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d /tmp/modelops-sanity.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
dest="$tmp/ansible_collections/modelops/serving"
mkdir -p "$dest"
cd "$root"
git ls-files -z --cached --others --exclude-standard \
  | grep -zv -e '^bench/' -e '^runtime/tests/' \
  | tar --null -T - -c | tar -C "$dest" -x
cd "$dest"
# The sanity tests get their own requirements (pinned by ansible-test itself).
ansible-test sanity --python "$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')" \
  --requirements --color no "$@"
