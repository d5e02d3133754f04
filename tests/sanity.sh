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
# The plugins, roles and playbooks are what ansible-test judges; the serving
# runtime, the lab tooling and the tests are plain Python with their own checks.
git ls-files -z --cached --others --exclude-standard \
  | grep -zE -e '^(plugins|roles|playbooks|meta|tests/sanity)/' -e '^(galaxy.yml|README.md|CHANGELOG.md)$' \
  | grep -zvE -e '^roles/[^/]+/molecule/' \
  | tar --null -T - -c | tar -C "$dest" -x
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
