"""The CI pipeline examples (pipelines/): GitHub Actions and GitLab CI files valid against their
schemas (check-jsonschema's bundled copies, offline), and all three (Jenkins too) running the
stages of pipelines/run.sh in the order package -> staging -> gate -> approval -> production,
each stage one of our playbooks. tests/integration/test_pipelines.py runs the GitHub workflow
(act) and the GitLab pipeline (gitlab-ci-local) against the test lab; no Jenkins can run here.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
GITHUB = PIPELINES / "github" / "modelops-release.yml"
GITLAB = PIPELINES / "gitlab" / ".gitlab-ci.yml"
JENKINS = PIPELINES / "jenkins" / "Jenkinsfile"
RUN = PIPELINES / "run.sh"
ORDER = ["package", "staging", "gate", "promote"]


def schema_check(schema: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", schema, str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def run_sh_stages() -> dict[str, str]:
    """Each stage of run.sh's case statement and the playbook it runs."""
    text = RUN.read_text()
    body = text[text.rindex('case "$stage" in'):text.rindex("esac")]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s+(\w+)\)\s.*?(playbooks/\w+\.yml)", body, re.M)}


@pytest.mark.parametrize("schema, path", [("vendor.github-workflows", GITHUB), ("vendor.gitlab-ci", GITLAB)])
def test_the_workflow_files_are_valid_for_their_ci_system(schema, path):
    res = schema_check(schema, path)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("schema, path, old, new", [
    ("vendor.github-workflows", GITHUB, "    needs: package\n", "    need: package\n"),
    ("vendor.gitlab-ci", GITLAB, "  when: manual\n", "  when: by_hand\n"),
])
def test_the_schema_check_refuses_a_broken_file(tmp_path, schema, path, old, new):
    """The check can fail: a misspelt key or a value the CI system does not know."""
    broken = tmp_path / path.name
    text = path.read_text()
    assert old in text
    broken.write_text(text.replace(old, new, 1))
    assert schema_check(schema, broken).returncode != 0


def test_run_sh_stages_are_the_collections_playbooks():
    stages = run_sh_stages()
    assert stages == {"package": "playbooks/package_models.yml", "staging": "playbooks/rolling_update.yml",
                      "gate": "playbooks/promote.yml", "promote": "playbooks/promote.yml"}, stages
    for playbook in stages.values():
        assert (ROOT / playbook).is_file()
    text = RUN.read_text()
    assert "rollout_release_file=$release" in text and '-e "@$release" -e promote_check_only=true' in text
    res = subprocess.run(["bash", str(RUN), "deploy"], capture_output=True, text=True, timeout=60, check=False,
                         cwd=ROOT)
    assert res.returncode == 2 and "unknown stage deploy" in res.stderr, res.stderr


def test_github_runs_the_stages_in_order_and_production_waits_for_its_environment():
    wf = yaml.safe_load(GITHUB.read_text())
    jobs = wf["jobs"]
    order, job = [], "package"
    while job:
        run = [s["run"] for s in jobs[job]["steps"] if "run" in s]
        assert len(run) == 1, (job, run)
        order.append(run[0].split()[-1])
        job = next((name for name, j in jobs.items() if j.get("needs") == job), None)
    assert order == ORDER, order
    promote_job = next(name for name, j in jobs.items() if "run.sh promote" in str(j["steps"]))
    assert jobs[promote_job]["environment"] == "production", "the approval is the production environment's reviewers"
    # Every job checks the repository out (act copies the local checkout); the artifact actions
    # are the only steps skipped under act.
    for name, j in jobs.items():
        assert j["steps"][0] == {"uses": "actions/checkout@v4"}, name
        for step in j["steps"][1:]:
            assert ("uses" in step) == (step.get("if") == "${{ !env.ACT }}"), (name, step)


def test_gitlab_runs_the_stages_in_order_and_production_is_manual():
    ci = yaml.safe_load(GITLAB.read_text())
    jobs = {name: job for name, job in ci.items() if isinstance(job, dict) and "script" in job}
    by_stage = sorted(jobs.values(), key=lambda job: ci["stages"].index(job["stage"]))
    assert [job["script"].split()[-1] for job in by_stage] == ORDER
    production = by_stage[-1]
    assert production["when"] == "manual" and production["allow_failure"] is False
    assert "release.json" in jobs["staging"]["artifacts"]["paths"]


def test_jenkins_runs_the_stages_in_order_with_an_input_before_production():
    """No Jenkins runs here: the declarative file is read for its stages, their run.sh calls and the input."""
    text = JENKINS.read_text()
    assert text.count("{") == text.count("}") and text.count("(") == text.count(")")
    stages = re.findall(r"stage\('([^']+)'\)\s*\{(.*?)\n        \}", text, re.S)
    names = [name for name, _ in stages]
    assert names == ["Package", "Staging", "Gate", "Approval", "Production"], names
    calls = [re.findall(r"run\.sh (\w+)", body) for _, body in stages]
    assert calls == [["package"], ["staging"], ["gate"], [], ["promote"]], calls
    assert "input message:" in dict(stages)["Approval"]
    assert "archiveArtifacts artifacts: 'release.json'" in dict(stages)["Staging"]
