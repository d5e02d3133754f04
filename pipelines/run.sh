#!/usr/bin/env bash
# One stage of the release pipeline: the same script for GitHub Actions
# (github/modelops-release.yml), GitLab CI (gitlab/.gitlab-ci.yml) and Jenkins
# (jenkins/Jenkinsfile), each of which only orders the stages, holds the
# secrets and asks for the approval. Every stage runs the collection's own
# playbooks from this checkout.
#
#   pipelines/run.sh package   build the catalog's new images (package_models.yml)
#   pipelines/run.sh staging   roll them out over staging and write the release
#                              record, what staging runs by digest (rolling_update.yml)
#   pipelines/run.sh gate      check that release in staging: live, sample, SLO, no
#                              alert over the soak window (promote.yml, checks only)
#   pipelines/run.sh promote   check again and roll the exact images staging ran
#                              out over production, by digest (promote.yml)
#
# Environment (the CI system's variables and secrets):
#   MODELOPS_STAGING_INVENTORY     default inventories/staging
#   MODELOPS_PRODUCTION_INVENTORY  default inventories/production
#   MODELOPS_RELEASE_FILE          the release record handed from staging on
#                                  (default release.json; keep it as an artifact)
#   MODELOPS_SSH_KEY               the fleet's SSH private key (its text), if the
#                                  inventory does not name a key file
#   MODELOPS_VAULT_PASSWORD        the inventories' vault password (its text)
#   ANSIBLE_PRIVATE_KEY_FILE / ANSIBLE_VAULT_PASSWORD_FILE  instead of the two above
#   MODELOPS_EXTRA_ARGS            more ansible-playbook arguments (e.g. -e rollout_batch=1)
#   MODELOPS_VENV                  a venv made from requirements.txt, instead of
#                                  this checkout's .venv (made when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: pipelines/run.sh package|staging|gate|promote}
case "$stage" in
  package|staging|gate|promote) ;;
  *) echo "pipelines/run.sh: unknown stage $stage (package, staging, gate or promote)" >&2; exit 2 ;;
esac
staging=${MODELOPS_STAGING_INVENTORY:-inventories/staging}
production=${MODELOPS_PRODUCTION_INVENTORY:-inventories/production}
release=$(realpath -m "${MODELOPS_RELEASE_FILE:-release.json}")
read -r -a extra <<< "${MODELOPS_EXTRA_ARGS:-}"

# Secrets given as text become files only this job can read, removed when it ends.
secrets=$(mktemp -d)
trap 'rm -rf "$secrets"' EXIT
umask 077
if [ -n "${MODELOPS_SSH_KEY:-}" ]; then
  printf '%s\n' "$MODELOPS_SSH_KEY" > "$secrets/ssh_key"
  export ANSIBLE_PRIVATE_KEY_FILE="$secrets/ssh_key"
fi
if [ -n "${MODELOPS_VAULT_PASSWORD:-}" ]; then
  printf '%s\n' "$MODELOPS_VAULT_PASSWORD" > "$secrets/vault_password"
  export ANSIBLE_VAULT_PASSWORD_FILE="$secrets/vault_password"
fi
umask 022

# The controller's pinned Ansible: a runner's own venv made from requirements.txt
# (MODELOPS_VENV), or this checkout's .venv (made, or left as it is when current).
if [ -n "${MODELOPS_VENV:-}" ]; then
  venv=$MODELOPS_VENV
  mkdir -p .cache/collections/ansible_collections/modelops
  ln -sfn "$PWD" .cache/collections/ansible_collections/modelops/serving
else
  venv=$PWD/.venv
  make --no-print-directory venv >/dev/null
fi
export ANSIBLE_CONFIG="$PWD/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$PWD/.cache/collections" ANSIBLE_FORCE_COLOR=0
playbook() { "$venv/bin/ansible-playbook" "$@" "${extra[@]}"; }

echo "==> modelops pipeline: $stage"
case "$stage" in
  package) playbook -i "$staging" playbooks/package_models.yml ;;
  staging) playbook -i "$staging" playbooks/rolling_update.yml -e "rollout_release_file=$release" ;;
  gate)    playbook -i "$production" playbooks/promote.yml -e "@$release" -e promote_check_only=true ;;
  promote) playbook -i "$production" playbooks/promote.yml -e "@$release" ;;
esac
