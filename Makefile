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
# The test suite's own lab: its own containers, network, state, model files and
# image namespace (inventories/testlab/group_vars/all/lab.yml), so that `make test`
# never touches what `make demo` or a user's playbooks built.
TEST_INVENTORY := inventories/testlab
# Its staging environment: a lab of its own (one model server that watches
# itself), where playbooks/promote.yml takes the images production gets from.
STAGING_INVENTORY := inventories/testlab-staging
TEST_CACHE := $(ROOT)/.cache/testlab
export ANSIBLE_COLLECTIONS_PATH := $(ROOT)/.cache/collections:$(HOME)/.ansible/collections:/usr/share/ansible/collections
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export PATH := $(VENV)/bin:$(PATH)
export PY_COLORS := 0
export DEBIAN_FRONTEND := noninteractive
export ANSIBLE_FORCE_COLOR := 0

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

RT_VENV := $(ROOT)/.venv-runtime
$(RT_VENV)/.stamp: runtime/requirements-dev.txt $(wildcard runtime/modelops_runtime/requirements/*.txt)
	[ -x $(RT_VENV)/bin/pip ] || python3 -m venv $(RT_VENV)
	$(RT_VENV)/bin/pip install -q -r runtime/requirements-dev.txt
	touch $@

.PHONY: runtime-venv
runtime-venv: $(RT_VENV)/.stamp ## Create the serving runtime's test venv

.PHONY: engine
engine: ## Make sure a Docker engine answers (installs docker.io and starts it if needed)
	bash scripts/host-engine.sh

.PHONY: host-tools
# One apt run, after the engine's (two at once would fight over the dpkg lock
# when `make test` runs its checks side by side). RUNLEVEL=1: install, do not start.
host-tools: engine ## Install the real daemons some tests start: rsyslog (+ Elasticsearch output) for log_shipping, NGINX for the runtime
	command -v rsyslogd >/dev/null && [ -e /usr/lib/x86_64-linux-gnu/rsyslog/omelasticsearch.so ] && command -v nginx >/dev/null || \
	  { apt-get update -qq && RUNLEVEL=1 apt-get install -y -qq rsyslog rsyslog-elasticsearch nginx-light >/dev/null; }

.PHONY: images
images: engine ## Build the lab base images (Debian 12 and 13, cached by recipe)
	bash lab/images/build.sh

.PHONY: lab
lab: venv images ## Start the lab fleet from $(INVENTORY)
	$(PY) lab/lab.py up --inventory $(INVENTORY)

.PHONY: lab-down
lab-down: ## Remove every container, network and volume the lab made, nothing else
	@if [ -x $(PY) ]; then $(PY) lab/lab.py down --inventory $(INVENTORY); else python3 lab/lab.py down --inventory $(INVENTORY); fi

DEMO_DIR := $(ROOT)/.cache/demo
# The demo model (trained from scikit-learn's bundled iris data), for either lab.
%/iris-v1/iris.joblib: lab/demo/train_iris.py | venv
	$(PY) lab/demo/train_iris.py $*/iris-v1

.PHONY: demo-image
demo-image: venv images $(DEMO_DIR)/iris-v1/iris.joblib ## Package the demo model (image + archive) on the controller
	ansible-playbook -i $(INVENTORY) playbooks/package_models.yml

.PHONY: test-image
test-image: venv images $(TEST_CACHE)/iris-v1/iris.joblib ## Package the test lab's model (its own image namespace) on the controller
	@# The suite's own images are rebuilt once per run: model_package keeps a released
	@# version as it is when only the runtime changed, and the suite must test this checkout's.
	ns=$$($(PY) lab/lab.py info --inventory $(TEST_INVENTORY) | $(PY) -c 'import json,sys; print(json.load(sys.stdin)["vars"]["modelops_image_namespace"])') && \
	  docker images --format '{{.Repository}}:{{.Tag}}' "$$ns/*" | xargs -r docker rmi -f >/dev/null
	rm -f $(TEST_CACHE)/*.tar
	ansible-playbook -i $(TEST_INVENTORY) playbooks/package_models.yml

.PHONY: demo
demo: lab $(DEMO_DIR)/iris-v1/iris.joblib ## Package the demo model and converge the lab fleet with playbooks/site.yml
	ansible-playbook -i $(INVENTORY) playbooks/site.yml

# ---------------------------------------------------------------- quality gates
# Docs made from the code: each role README's variables table (between its
# GENERATED markers) from meta/argument_specs.yml, and docs/collection/ (module,
# filter and role pages, reStructuredText that forges render) by antsibull-docs.
# Both are committed; `make lint` fails when either is stale.
DOCS_DIR := docs/collection
ANTSIBULL_DOCS := antsibull-docs collection --use-current --squash-hierarchy --output-format simplified-rst \
	--no-add-antsibull-docs-version --fail-on-error
.PHONY: docs
docs: venv ## Regenerate the role READMEs' variables tables and docs/collection (module, filter, role pages)
	$(PY) scripts/role_docs.py
	rm -rf $(DOCS_DIR).new && mkdir -m 0755 $(DOCS_DIR).new
	$(ANTSIBULL_DOCS) --dest-dir $(DOCS_DIR).new modelops.serving || { rm -rf $(DOCS_DIR).new; exit 1; }
	rm -rf $(DOCS_DIR) && mv $(DOCS_DIR).new $(DOCS_DIR)
	antsibull-changelog generate

.PHONY: docs-check
docs-check: venv ## Fail naming what is stale: README tables, docs/collection, CHANGELOG.md, paths the READMEs name
	$(PY) scripts/role_docs.py --check
	@tmp=$$(mktemp -d) && chmod 0755 $$tmp && trap 'rm -rf $$tmp' EXIT && \
	  $(ANTSIBULL_DOCS) --dest-dir $$tmp modelops.serving >/dev/null && \
	  { diff -ru $(DOCS_DIR) $$tmp || { echo "$(DOCS_DIR) is stale: run make docs"; exit 1; }; } && \
	  antsibull-changelog generate --output $$tmp/CHANGELOG.md --output-format md && \
	  { diff -u CHANGELOG.md $$tmp/CHANGELOG.md || { echo "CHANGELOG.md is stale: run make docs"; exit 1; }; }
	antsibull-docs lint-collection-docs --plugin-docs --output-format simplified-rst .
	$(PY) scripts/check_paths.py README.md docs/*.md roles/*/README.md runtime/README.md pipelines/README.md

.PHONY: lint
lint: venv ## yamllint, ansible-lint (production profile), changelog fragments, argument_specs vs defaults, docs current
	yamllint -s .
	ansible-lint --profile production --offline
	antsibull-changelog lint
	$(PY) tests/check_argument_specs.py
	$(MAKE) --no-print-directory inventory-check
	$(MAKE) --no-print-directory docs-check

.PHONY: inventory-check
inventory-check: venv ## The example site's and the test lab's (production and staging) role variables: known to their roles, accepted by their argument specs
	ansible-playbook -i inventories/example tests/inventory_check.yml -e @inventories/example/group_vars/all/vault.yml.example
	ansible-playbook -i $(TEST_INVENTORY) tests/inventory_check.yml
	ansible-playbook -i $(STAGING_INVENTORY) tests/inventory_check.yml

.PHONY: sanity
sanity: installed ## ansible-test sanity on the collection installed from the tarball
	bash tests/sanity.sh $(INSTALLED)/ansible_collections/modelops/serving

.PHONY: unit
unit: venv host-tools ## Unit tests: plugins, role scripts, lab and docs tools (tests/unit mirrors the tree)
	$(PY) -m pytest -q tests/unit

.PHONY: preflight-test
preflight-test: venv ## Bad variables of the edge roles and bad playbook options fail first, naming the variable, changing nothing
	$(PY) -m pytest -q tests/integration/test_edge_bad_vars.py tests/integration/test_playbook_options.py

.PHONY: runtime-test
runtime-test: runtime-venv host-tools ## The serving runtime's own tests (protocol, metrics, drift, fuzzing)
	cd runtime && $(RT_VENV)/bin/python -m pytest -q -m "not heavy"

.PHONY: package-test
package-test: venv images ## model_package end to end: real images, V2 clients
	$(PY) -m pytest -q tests/integration/test_model_package.py

.PHONY: molecule
# Every scenario (roles/*/molecule/*) in two lanes at once, longest first by
# their measured times (tests/molecule-times.json); any scenario runs in any lane.
molecule: venv images test-image ## Molecule for every role's scenarios (Debian 12 and 13 systemd hosts), two lanes at once
	$(PY) tests/molecule_queue.py --lanes 2

.PHONY: integration
integration: venv images test-image test-ee ## A fresh test lab fleet converged twice (the second, in the execution environment, must change nothing), and its staging environment converged
	$(PY) lab/lab.py down --inventory $(TEST_INVENTORY)
	$(PY) lab/lab.py down --inventory $(STAGING_INVENTORY)
	$(PY) lab/lab.py up --inventory $(TEST_INVENTORY)
	$(PY) lab/lab.py up --inventory $(STAGING_INVENTORY)
	PYTHON=$(PY) EE_IMAGE=$(EE_TEST_IMAGE) bash tests/integration/site_idempotence.sh $(TEST_INVENTORY)
	@t=$$(date +%s); ansible-playbook -i $(STAGING_INVENTORY) playbooks/site.yml; \
	  echo "==> site.yml on the staging environment: $$(( $$(date +%s) - t )) s"

.PHONY: rollout-test
rollout-test: integration ## Rolling update v1->v2, broken v3, rollback, maintenance, under TLS load through the load balancer
	cd tests/integration && LAB_INVENTORY=$(ROOT)/$(TEST_INVENTORY) $(PY) -m pytest -q -s test_rollout.py -p no:cacheprovider

.PHONY: observability-test
observability-test: integration ## On the same lab: every target up, 401s, drift/accuracy/not-ready alerts fire at Alertmanager, every dashboard panel has data
	cd tests/integration && LAB_INVENTORY=$(ROOT)/$(TEST_INVENTORY) $(PY) -m pytest -q -s test_observability.py -p no:cacheprovider

GITLAB_CI_LOCAL := $(ROOT)/.cache/node/node_modules/.bin/gitlab-ci-local
$(GITLAB_CI_LOCAL):
	command -v npm >/dev/null && command -v rsync >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq npm rsync >/dev/null; }
	npm install --silent --no-audit --no-fund --prefix $(ROOT)/.cache/node gitlab-ci-local@4.65.0

.PHONY: pipeline-tools
pipeline-tools: venv $(GITLAB_CI_LOCAL) ## The CI runners the pipeline proof uses: act (in the venv) and gitlab-ci-local (npm)

.PHONY: pipeline-test
pipeline-test: pipeline-tools integration ## On the same lab: the GitHub workflow (act) and the GitLab pipeline (gitlab-ci-local) take a version through staging to production
	cd tests/integration && LAB_INVENTORY=$(ROOT)/$(TEST_INVENTORY) GITLAB_CI_LOCAL=$(GITLAB_CI_LOCAL) \
	  $(PY) -m pytest -q -s test_pipelines.py -p no:cacheprovider

.PHONY: test-lab-down
test-lab-down: ## Remove the test lab and its staging environment (make test leaves them up for inspection)
	$(PY) lab/lab.py down --inventory $(TEST_INVENTORY)
	$(PY) lab/lab.py down --inventory $(STAGING_INVENTORY)

.PHONY: user-state-snapshot user-state-check
user-state-snapshot: venv images ## Record what a user built (images, demo lab, lab state) before the suite
	$(PY) tests/integration/user_state.py snapshot
user-state-check: venv ## After the suite: everything recorded is exactly as it was
	$(PY) tests/integration/user_state.py check

.PHONY: checks
# The static checks and the tests that need no lab. `make test` runs them two
# at a time (each mostly keeps one core busy; CI has two), each target's output
# kept together.
checks: lint sanity collection-test unit preflight-test runtime-test package-test ## Static checks and lab-free tests (make -j2 checks runs two at a time)

.PHONY: test
test: user-state-snapshot ## Everything CI runs
	@t=$$(date +%s); $(MAKE) --no-print-directory -j2 --output-sync=target checks; \
	  echo "==> make test: the checks took $$(( $$(date +%s) - t )) s"
	@# One make for everything that needs the test image: it is built once.
	@t=$$(date +%s); $(MAKE) --no-print-directory molecule collection-lab rollout-test observability-test pipeline-test; \
	  echo "==> make test: molecule and the lab took $$(( $$(date +%s) - t )) s"
	$(MAKE) --no-print-directory user-state-check

# ---------------------------------------------------------------- the collection as users get it
GALAXY_VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL   := $(ROOT)/.cache/dist/modelops-serving-$(GALAXY_VERSION).tar.gz
INSTALLED := $(ROOT)/.cache/installed

.PHONY: build
build: venv ## Build the collection tarball, check what it holds, print its size and file count
	rm -f $(ROOT)/.cache/dist/modelops-serving-*.tar.gz
	ansible-galaxy collection build --force --output-path $(ROOT)/.cache/dist .
	$(PY) tests/check_tarball.py $(TARBALL)

.PHONY: ee
ee: build images ## Build the execution environment image (execution-environment.yml's tag) offline: wheelhouse on the controller, then ansible-builder
	bash scripts/ee-build.sh $(PY)

# The suite's own build of the same file, under a name the suite owns (a user's
# modelops-ee image is left alone).
EE_TEST_IMAGE := modelops-test/ee:$(GALAXY_VERSION)
.PHONY: test-ee
test-ee: build images ## Build the execution environment as the suite's image modelops-test/ee:<version>
	bash scripts/ee-build.sh $(PY) $(EE_TEST_IMAGE)

.PHONY: installed
installed: build ## Install the tarball, offline, into an empty collections path (.cache/installed)
	rm -rf $(INSTALLED)
	ANSIBLE_COLLECTIONS_PATH=$(INSTALLED) ansible-galaxy collection install --offline -p $(INSTALLED) $(TARBALL)

.PHONY: collection-test
collection-test: installed ## Installed copy alone: ansible-doc of every module and role, playbook syntax; galaxy-importer
	bash tests/installed.sh docs $(INSTALLED) $(TARBALL)

.PHONY: collection-lab
collection-lab: installed integration ## Installed copy alone: our playbooks against the converged lab fleet change nothing
	bash tests/installed.sh lab $(INSTALLED) $(TEST_INVENTORY)
