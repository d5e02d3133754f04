# modelops.serving — one command each. Run as root on Debian/Ubuntu.
#   make demo      venv + Docker engine + lab images + lab fleet + site.yml
#   make test      everything CI runs (.ci/run calls exactly this)
#   make lab-down  remove every container, network and volume the lab made
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT      := $(abspath .)
VENV      := $(ROOT)/.venv
PY        := $(VENV)/bin/python
COLL_LINK := $(ROOT)/.cache/collections/ansible_collections/modelops/serving
INVENTORY ?= inventories/lab
export ANSIBLE_COLLECTIONS_PATH := $(ROOT)/.cache/collections:$(HOME)/.ansible/collections:/usr/share/ansible/collections
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export PATH := $(VENV)/bin:$(PATH)
export PY_COLORS := 0
export ANSIBLE_FORCE_COLOR := 0

# Roles that have a molecule scenario (roles/<name>/molecule/default).
MOLECULE_ROLES := $(patsubst roles/%/molecule/default/molecule.yml,%,$(wildcard roles/*/molecule/default/molecule.yml))

.PHONY: help
help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# ---------------------------------------------------------------- setup
$(VENV)/.stamp: requirements.txt
	[ -x $(VENV)/bin/pip ] || python3 -m venv $(VENV) || \
	  { apt-get update -qq && apt-get install -y -qq python3-venv && rm -rf $(VENV) && python3 -m venv $(VENV); }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

$(COLL_LINK):
	mkdir -p $(dir $@)
	ln -sfn $(ROOT) $@

.PHONY: venv
venv: $(VENV)/.stamp $(COLL_LINK) ## Create the controller venv (pinned Ansible, molecule, linters)

.PHONY: engine
engine: ## Make sure a Docker engine answers (installs docker.io and starts it if needed)
	bash scripts/host-engine.sh

.PHONY: images
images: engine ## Build the lab base images (Debian 12 and 13, cached by recipe)
	bash lab/images/build.sh

.PHONY: lab
lab: venv images ## Start the lab fleet from $(INVENTORY)
	$(PY) lab/lab.py up --inventory $(INVENTORY)

.PHONY: lab-down
lab-down: ## Remove every container, network and volume the lab made, nothing else
	@if [ -x $(PY) ]; then $(PY) lab/lab.py down --inventory $(INVENTORY); else python3 lab/lab.py down --inventory $(INVENTORY); fi

.PHONY: demo
demo: lab ## Converge the lab fleet with playbooks/site.yml
	ansible-playbook -i $(INVENTORY) playbooks/site.yml

# ---------------------------------------------------------------- quality gates
.PHONY: lint
lint: venv ## yamllint, ansible-lint (production profile), argument_specs vs defaults
	yamllint -s .
	ansible-lint --profile production --offline
	$(PY) tests/check_argument_specs.py

.PHONY: sanity
sanity: venv ## ansible-test sanity for the collection's plugins
	bash tests/sanity.sh

.PHONY: unit
unit: venv ## Unit tests of the collection's Python code
	$(PY) -m pytest -q tests/unit

.PHONY: molecule
molecule: venv images ## Molecule for every role (Debian 12 and 13 systemd hosts)
	@set -e; for role in $(MOLECULE_ROLES); do \
	  echo "==> molecule test: $$role"; \
	  (cd roles/$$role && molecule test); \
	done

.PHONY: integration
integration: lab ## The lab fleet converged twice: the second run must change nothing
	bash tests/integration/site_idempotence.sh $(INVENTORY)

.PHONY: test
test: lint sanity unit molecule integration ## Everything CI runs

.PHONY: build
build: venv ## Build the collection tarball
	ansible-galaxy collection build --force --output-path .cache/dist .
