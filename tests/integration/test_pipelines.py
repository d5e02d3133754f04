"""The CI pipeline examples (pipelines/), run for real by local runners of their CI systems against
the test lab's staging and production environments (after the rollout and observability proofs):

1. the GitHub Actions workflow under act (self-hosted mode: each job's `run:` steps run on this
   machine in act's copy of the checkout) takes iris 2 through staging to production (the version
   given as the pipeline's extra arguments, as a site would bump its catalog);
2. the GitLab pipeline under gitlab-ci-local (shell executor, the manual production job started as a
   person would) takes the inventory's catalog, iris 1, through staging to production.

Each must run its four stages in order and succeed, every stage one of our playbooks, and end with
staging and production serving the version it took, production on the very image staging ran.
Jenkins cannot run here; tests/unit/test_pipelines.py reads its file.
"""
import json
import os
import subprocess
import tempfile

from test_rollout import (INVENTORY, MODEL_HOSTS, NAMESPACE, ROOT, STAGING, STAGING_HOSTS, STAGING_INVENTORY,
                          VENV_BIN, gateway_version, lab_secret, models_var)

STAGES = ["package", "staging", "gate", "promote"]


def lab_env():
    return dict(os.environ, PATH=VENV_BIN + ":" + os.environ["PATH"], ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")


def stages_in(output):
    return [line.split("==> modelops pipeline: ", 1)[1].split()[0] for line in output.splitlines()
            if "==> modelops pipeline: " in line]


def serving(version):
    ca = os.path.join(STAGING["state"], "pki", "ca.crt")
    key = lab_secret("api_key", STAGING["state"])
    for host, ip in STAGING_HOSTS.items():
        assert gateway_version(ip, host, ca, key) == version, host
    ca = os.path.join(os.path.dirname(STAGING["state"]), "pki", "ca.crt")
    key = lab_secret("api_key")
    for host, ip in MODEL_HOSTS.items():
        assert gateway_version(ip, host, ca, key) == version, host


def production_digest():
    """The image of iris's live replicas on every production host (one digest, or the test fails)."""
    digests = set()
    for host in MODEL_HOSTS:
        record = json.loads(subprocess.check_output(
            ["docker", "exec", "modelops-testlab-" + host, "cat", "/etc/ansible/facts.d/modelops.fact"]))
        live = record["models"]["iris"]["live_slot"]
        digests.add(subprocess.check_output(
            ["docker", "exec", "modelops-testlab-" + host, "docker", "inspect", "--format", "{{.Image}}",
             "model-iris-%s-0" % live], text=True).strip())
    assert len(digests) == 1, digests
    return digests.pop()


def test_the_github_workflow_under_act_takes_version_2_to_production():
    shared = tempfile.mkdtemp(prefix="modelops-act-")
    release = os.path.join(shared, "release.json")
    catalog = os.path.join(shared, "catalog-v2.json")
    with open(catalog, "w") as handle:
        handle.write(models_var(2))
    env = {"MODELOPS_STAGING_INVENTORY": STAGING_INVENTORY, "MODELOPS_PRODUCTION_INVENTORY": INVENTORY,
           "MODELOPS_RELEASE_FILE": release, "MODELOPS_VENV": os.path.dirname(VENV_BIN),
           "MODELOPS_EXTRA_ARGS": "-e @" + catalog}
    cmd = [os.path.join(VENV_BIN, "act"), "workflow_dispatch", "-W", "pipelines/github/modelops-release.yml",
           "-P", "self-hosted=-self-hosted", "-P", "modelops=-self-hosted"]
    # act fetches every action a job names before the job starts, even one its `if` skips; GitHub
    # cannot be reached here, so the artifact actions (skipped under act) resolve to an empty
    # local action that never runs.
    for action in ("actions/upload-artifact@v4", "actions/download-artifact@v4"):
        folder = os.path.join(shared, action.replace("/", "-"))
        os.makedirs(folder)
        with open(os.path.join(folder, "action.yml"), "w") as handle:
            handle.write("name: skipped under act\nruns:\n  using: composite\n  steps: []\n")
        cmd += ["--local-repository", "%s=%s" % (action, folder)]
    for key, value in env.items():
        cmd += ["--env", "%s=%s" % (key, value)]
    proc = subprocess.run(cmd, cwd=ROOT, env=lab_env(), capture_output=True, text=True, timeout=1500, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert stages_in(out) == STAGES, stages_in(out)
    assert "Job succeeded" in out and "Job failed" not in out, out[-3000:]
    serving("2")
    with open(release) as handle:
        staged = json.load(handle)["promote_release"]
    assert staged["models"]["iris"]["image"] == NAMESPACE + "/iris:2"
    assert production_digest() == staged["models"]["iris"]["digest"]


def test_the_gitlab_pipeline_under_gitlab_ci_local_takes_the_catalog_to_production():
    release = os.path.join(ROOT, "release.json")
    cmd = [os.environ.get("GITLAB_CI_LOCAL", "gitlab-ci-local"), "--file", "pipelines/gitlab/.gitlab-ci.yml",
           "--manual", "production", "--no-color", "--state-dir", ".cache/gitlab-ci-local",
           "--variable", "CI_PIPELINE_SOURCE=web",
           "--variable", "MODELOPS_STAGING_INVENTORY=" + STAGING_INVENTORY,
           "--variable", "MODELOPS_PRODUCTION_INVENTORY=" + INVENTORY]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=lab_env(), capture_output=True, text=True, timeout=1500,
                              check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:]
        assert stages_in(out) == STAGES, stages_in(out)
        serving("1")
        with open(release) as handle:
            staged = json.load(handle)["promote_release"]
        assert staged["models"]["iris"]["version"] == "1"
        assert production_digest() == staged["models"]["iris"]["digest"]
    finally:
        if os.path.exists(release):
            os.unlink(release)
