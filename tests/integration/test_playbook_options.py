"""The playbooks' own options (extra vars, AWX survey answers) are checked before any host is
touched: a wrong value fails naming the option, and a right one passes the check.

Each case runs the real playbook against an inventory whose model server is an address nothing
answers on (TEST-NET-1): a check that let a bad value through would go on to that host and show
up as UNREACHABLE instead of the option's message.
Run: .venv/bin/python -m pytest -q tests/integration/test_playbook_options.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SPECS = yaml.safe_load((ROOT / "playbooks" / "vars" / "argument_specs.yml").read_text())["playbook_argument_specs"]


# A release record as rolling_update.yml writes it, from a staging where iris 1 ran.
RELEASE = {"environment": "staging", "recorded_at": 1.0, "prometheus_url": "",
           "models": {"iris": {"version": "1", "image": "modelops/iris:1", "digest": "sha256:" + "a" * 64,
                               "hosts": ["stage1"]}},
           "gateways": [{"host": "stage1", "url": "https://192.0.2.2:443", "server_name": "stage1"}]}


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    path = tmp_path_factory.mktemp("inv") / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "ssh", "ansible_ssh_common_args": "-o ConnectTimeout=2",
                 "modelops_models": [{"name": "iris", "version": "1", "image": "modelops/iris", "port": 8600}]},
        "children": {"model_servers": {"hosts": {"ghost": {"ansible_host": "192.0.2.1"}}}}}}))
    return path


def run(inventory: Path, playbook: str, extra: dict, check: bool = True):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / playbook),
           "-e", json.dumps(extra), "-e", f"ansible_python_interpreter={sys.executable}"]
    if check:
        cmd.append("--check")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    return res.returncode, res.stdout + res.stderr


@pytest.mark.parametrize("playbook, extra, names", [
    ("rolling_update.yml", {"rollout_batch": "a third"}, ["rollout_batch", "a third"]),
    ("rolling_update.yml", {"rollout_serial": [1, "0"]}, ["rollout_serial", "0 is not a host count"]),
    ("rolling_update.yml", {"rollout_serial": "1,2"}, ["rollout_serial", "1,2 is not a host count"]),
    ("rolling_update.yml", {"rollout_canary": "maybe"}, ["rollout_canary", "not a valid boolean"]),
    ("rolling_update.yml", {"rollout_rollback_all": "sometimes"}, ["rollout_rollback_all"]),
    ("rollback.yml", {"rollback_models": ["iris", "irsi"]}, ["rollback_models", "irsi is not a model"]),
    ("rollback.yml", {"rollback_models": "iris, irsi"}, ["rollback_models", "irsi is not a model"]),
    ("rollback.yml", {"rollback_serial": "half"}, ["rollback_serial", "half"]),
    ("package.yml", {"model_name": "iris", "model_version": "2", "wheelhouse": "/nonexistent"}, ["model_path"]),
    ("package.yml", {"model_path": "/nonexistent/iris.joblib", "model_name": "iris", "model_version": "2",
                     "wheelhouse": "/nonexistent", "model_push": "perhaps"}, ["model_push"]),
    ("rolling_update.yml", {"rollout_digests": {"iris": "latest"}}, ["rollout_digests", "iris"]),
    ("promote.yml", {}, ["promote_release"]),
    ("promote.yml", {"promote_release": {"environment": "staging"}},
     ["must have environment, recorded_at, models, gateways"]),
    ("promote.yml", {"promote_release": RELEASE, "promote_soak_seconds": "a while"}, ["promote_soak_seconds"]),
    ("promote.yml", {"promote_release": dict(RELEASE, models={"iris": dict(RELEASE["models"]["iris"], version="2")})},
     ["catalog names version 1, but staging tested version 2"]),
    ("promote.yml", {"promote_release": RELEASE, "promote_models": ["irsi"]},
     ["irsi is not in the release of staging (it has iris)"]),
    ("maintenance.yml", {}, ["maintenance_host"]),
    ("maintenance.yml", {"maintenance_host": "ghost", "maintenance_drain_wait": "soon"}, ["maintenance_drain_wait"]),
    ("maintenance.yml", {"maintenance_host": "lb9"}, ["maintenance_host", "lb9"]),
])
def test_a_wrong_option_fails_naming_it_before_any_host(inventory, playbook, extra, names):
    code, out = run(inventory, playbook, extra)
    assert code != 0, out
    for name in names:
        assert name in out, out[-3000:]
    assert "UNREACHABLE" not in out and "ghost" not in out.split("PLAY RECAP")[-1], out[-3000:]


@pytest.mark.parametrize("playbook, extra", [
    ("rolling_update.yml", {"rollout_batch": 2, "rollout_canary": "false", "rollout_rollback_all": "yes",
                            "rollout_gateway_check": "no"}),
    ("rolling_update.yml", {"rollout_serial": [1, "50%", 3]}),
    ("rollback.yml", {"rollback_models": ["iris"], "rollback_serial": "50%"}),
    ("rollback.yml", {"rollback_models": "iris", "rollback_serial": 2}),
    # No options at all: every check must cope with options that are not set.
    ("rollback.yml", {}),
    ("rolling_update.yml", {}),
    ("maintenance.yml", {"maintenance_host": "ghost"}),
])
def test_right_options_pass_the_check(inventory, playbook, extra):
    """Valid values, strings as AWX surveys send them included, get past the check: the run goes
    on to the (unreachable) model server."""
    code, out = run(inventory, playbook, extra)
    assert "ghost" in out and "UNREACHABLE" in out, out[-3000:]


def test_every_documented_option_is_read_by_its_playbook():
    """An option in playbooks/vars/argument_specs.yml that its playbook never reads would be a
    survey question with no effect."""
    for playbook, spec in SPECS.items():
        text = (ROOT / "playbooks" / f"{playbook}.yml").read_text()
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        for option in spec["options"]:
            assert body.count(option) >= 1, f"{playbook}.yml never reads {option}"
        assert f"playbook_argument_specs.{playbook}.options" in body, f"{playbook}.yml does not validate its options"
