#!/usr/bin/env bash
# Run `ansible-test sanity` on the collection as users get it: a copy of the
# tree `make installed` installed from the tarball, plus this checkout's
# tests/sanity (the ignore file and the pip bootstrap stand-in), which the
# tarball leaves out. A copy, because ansible-test writes into the tree it
# tests (tests/output) and the installed copy must stay as installed.
#   bash tests/sanity.sh INSTALLED_DIR [ansible-test sanity options]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
installed="${1:?usage: $0 INSTALLED_DIR (.../ansible_collections/modelops/serving) [ansible-test options]}"
shift
if [ ! -f "$installed/MANIFEST.json" ]; then
  echo "$installed is not an installed collection (no MANIFEST.json): run make installed" >&2
  exit 2
fi
tmp="$(mktemp -d /tmp/modelops-sanity.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
dest="$tmp/ansible_collections/modelops/serving"
mkdir -p "$dest/tests"
cp -a "$installed/." "$dest/"
cp -a "$root/tests/sanity" "$dest/tests/sanity"
# The serving runtime ships in the collection but is not Ansible code: it is
# copied into model images and has its own tests (make runtime-test). Ansible's
# pylint rules (no "_" names, isinstance over type()) are not its style, so
# sanity judges the plugins, roles, playbooks and metadata, as before.
rm -rf "$dest/runtime"
cd "$dest"
# ansible-test fetches a pip bootstrap script from a host we cannot reach;
# it reads it from this cache path when present (its documented workaround).
pip_ver="$(python3 -c 'import re,ansible_test,os; p=os.path.join(os.path.dirname(ansible_test.__file__),"_internal","python_requirements.py"); print(re.search(r"pip=.([0-9.]+).", open(p).read()).group(1))')"
cache="$HOME/.ansible/test/cache/get_pip_${pip_ver//./_}.py"
mkdir -p "$(dirname "$cache")"
cmp -s "$root/tests/sanity/bootstrap_pip.py" "$cache" || cp "$root/tests/sanity/bootstrap_pip.py" "$cache"
# The sanity tests get their own requirements (pinned by ansible-test itself).
ansible-test sanity --python "$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')" \
  --requirements --color no "$@"
